"""`vlkd data ...`: the synthetic dataset for demos and tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.output import console, err_console

app = typer.Typer(no_args_is_help=True, help="Datasets: generate the synthetic one.")


@app.command()
def synth(
    out: str = typer.Option("synth", "--out", "-o", help="folder or s3://BUCKET/PREFIX to write to"),
    videos: int = typer.Option(16, min=1, help="number of videos"),
    seed: int = typer.Option(0, help="same seed, same dataset"),
    profile: str = typer.Option(
        "demo",
        help="demo: short videos with a few exact captions, short paragraphs; howto100m-wiki103: shaped like the "
        "paper's pretraining data (minutes-long videos of overlapping ASR-like clips, Wikipedia-length articles)",
    ),
    push: bool = typer.Option(True, "--push/--no-push", help="also import it as dataset artifacts"),
    name: str = typer.Option("synth", help="artifact names: NAME-videos, NAME-text, NAME-<task>"),
    force: bool = typer.Option(False, "--force", help="replace what an earlier run wrote to --out"),
    store: Store = None,
) -> None:
    """Make a small real dataset offline: mp4 videos of moving shapes with captions that describe them, a text
    corpus with the same words, and downstream task files in their official formats."""
    from vlkd.artifacts import ArtifactStore, collect_files
    from vlkd.data.synth import TASKS, TASKS_DIR, TEXT_DIR, VIDEOS_DIR, SynthConfig, generate
    from vlkd.storage import open_storage

    config = SynthConfig(num_videos=videos, seed=seed, profile=profile)
    with tempfile.TemporaryDirectory(prefix="vlkd-synth-") as tmp:
        remote = out.startswith("s3://")
        root = Path(tmp) if remote else Path(out)
        if force and not remote:
            shutil.rmtree(root, ignore_errors=True)
        summary = generate(root, config)
        err_console.print(
            f"generated {summary.videos} videos, {summary.segments} captions, {summary.corpus_lines} corpus lines",
            highlight=False,
        )
        if remote:
            target = open_storage(out)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                target.upload(path.relative_to(root).as_posix(), path)
        console.print(f"wrote {out}", highlight=False)
        if push:
            artifacts = ArtifactStore.open(store)
            parts = {"videos": root / VIDEOS_DIR, "text": root / TEXT_DIR} | {t: root / TASKS_DIR / t for t in TASKS}
            attributes = {"synthetic": True, "seed": seed, "profile": profile}
            for part, folder in parts.items():
                manifest = artifacts.publish(
                    "dataset", f"{name}-{part}", collect_files([folder]), attributes=attributes
                )
                console.print(f"published {manifest.ref}", highlight=False)
