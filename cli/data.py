"""`vlkd data ...`: the synthetic dataset for demos and tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.output import console, err_console
from vlkd.pipelines import VIDEOS

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Datasets: generate the synthetic one.")

# The demo profile's default is the quickstart's dataset, so `vlkd data synth` where the quickstart ran reuses its
# versions instead of replacing them with a smaller dataset; a howto100m-wiki103 video lasts minutes.
DEFAULT_VIDEOS = {"demo": VIDEOS["tiny"], "howto100m-wiki103": 16}


@app.command()
def synth(
    out: str = typer.Option("synth", "--out", "-o", help="folder or s3://BUCKET/PREFIX to write to"),
    videos: Optional[int] = typer.Option(  # noqa: UP045 - typer reads the annotation at runtime on Python 3.10
        None,
        min=1,
        help=f"number of videos [default: {DEFAULT_VIDEOS['demo']} for demo, as the quickstart makes it; "
        f"{DEFAULT_VIDEOS['howto100m-wiki103']} for howto100m-wiki103]",
        show_default=False,
    ),
    seed: int = typer.Option(0, help="same seed, same dataset"),
    profile: str = typer.Option(
        "demo",
        help="demo: short videos with a few exact captions, short paragraphs; howto100m-wiki103: shaped like the "
        "paper's pretraining data (minutes-long videos of overlapping ASR-like clips, Wikipedia-length articles)",
    ),
    push: bool = typer.Option(True, "--push/--no-push", help="also import it as dataset artifacts"),
    name: str = typer.Option("synth", help="artifact names: NAME-videos, NAME-text, NAME-<task>"),
    force: bool = typer.Option(False, "--force", help="replace what an earlier run wrote to --out"),
    new_version: bool = typer.Option(
        False, "--new-version", help="publish every part, also those identical to their latest version"
    ),
    store: Store = None,
) -> None:
    """Make a small real dataset offline: mp4 videos of moving shapes with captions that describe them, a text
    corpus with the same words, and downstream task files in their official formats."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.data.synth import SynthConfig, generate, publish_dataset
    from vlkd.storage import open_storage

    config = SynthConfig(num_videos=videos or DEFAULT_VIDEOS.get(profile, VIDEOS["tiny"]), seed=seed, profile=profile)
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
            for manifest, new in publish_dataset(ArtifactStore.open(store), root, config, name, new_version):
                said = "published" if new else "unchanged"
                console.print(f"{said} {manifest.ref}{'' if new else ' (already holds these files)'}", highlight=False)
