"""`vlkd report ...`: read eval artifacts' comparison tables in the terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vlkd.cli.artifacts import Store
from vlkd.cli.output import console

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Evaluation reports: show one, compare several.")


def _results(store: str | None, ref: str) -> dict:
    """The results.json of an eval artifact (checksum-verified like every fetch)."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.errors import VlkdError
    from vlkd.evaluation.results import RESULTS_FILE, load_results
    from vlkd.inputs import open_input
    from vlkd.refs import ArtifactRef

    parsed = ArtifactRef.parse(ref if "/" in ref else f"eval/{ref}")
    if parsed.kind != "eval":
        raise VlkdError(
            f"{ref} is a {parsed.kind} artifact; `vlkd report` reads eval artifacts (eval/NAME), and teachers and "
            "students for their training curves"
        )
    manifest = ArtifactStore.open(store).manifest(parsed)
    if not any(f.path == RESULTS_FILE for f in manifest.files):
        raise VlkdError(f"{manifest.ref} holds no {RESULTS_FILE}")
    with tempfile.TemporaryDirectory() as tmp:
        local = open_input(str(manifest.ref), ArtifactStore.open(store)).fetch(RESULTS_FILE, Path(tmp) / RESULTS_FILE)
        return load_results(local)


def _print(results: dict) -> None:
    from vlkd.evaluation.report import render_table, report_notes

    console.print(render_table(results), highlight=False, markup=False, soft_wrap=True)
    for note in report_notes(results):
        console.print(f"Note: {note}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def show(
    ref: str = typer.Argument(
        ..., help="an eval artifact (eval/table1[:v2]), or a teacher or student for its training curves"
    ),
    plot: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--plot", help="teacher/student: draw the loss and validation curves to this PNG", show_default=False
    ),
    store: Store = None,
) -> None:
    """Print an eval artifact's comparison table (the paper's Table 1 layout) and its notes, or a training run's
    validation curve as a table (and, with --plot, its curves as a PNG)."""
    from vlkd.refs import ArtifactRef

    kind = ArtifactRef.parse(ref if "/" in ref else f"eval/{ref}").kind
    if kind in ("teacher", "student"):
        _show_training(store, ref, plot)
    elif plot is not None:
        raise typer.BadParameter("eval artifacts carry their charts (charts/*.png): `vlkd artifacts get` them")
    else:
        _print(_results(store, ref))


def _show_training(store: str | None, ref: str, plot: Path | None) -> None:
    from vlkd.artifacts import ArtifactStore
    from vlkd.curves import METRICS_PATH, plot_curves, published_step, read_curves
    from vlkd.errors import VlkdError
    from vlkd.inputs import open_input

    artifacts = ArtifactStore.open(store)
    manifest = artifacts.manifest(ref)
    if not any(f.path == METRICS_PATH for f in manifest.files):
        raise VlkdError(f"{manifest.ref} holds no {METRICS_PATH}: it was not trained by vlkd")
    with tempfile.TemporaryDirectory() as tmp:
        local = open_input(str(manifest.ref), artifacts).fetch(METRICS_PATH, Path(tmp) / "metrics.jsonl")
        training, validation = read_curves(local)
    keys = list(dict.fromkeys(k for r in validation for k in r if k.startswith("val_") and k != "val_queries"))
    table = Table("step", *keys, box=None, highlight=False)
    for record in validation:
        table.add_row(str(record["step"]), *(f"{record[k]:.4g}" if k in record else "-" for k in keys))
    console.print(f"{manifest.ref}: {len(training)} training records, {len(validation)} validations", highlight=False)
    console.print(table)
    if plot is not None:
        drawn = plot_curves(training, validation, str(manifest.ref), plot, published_step(manifest))
        console.print(f"wrote {drawn}", highlight=False)


@app.command()
def compare(
    refs: list[str] = typer.Argument(..., help="eval artifacts to merge into one table"),
    baseline: str = typer.Option(None, help="the row the others are compared with"),
    store: Store = None,
) -> None:
    """Merge several eval artifacts into one table; differences from the baseline get their intervals and
    flags their notes as in each artifact's own report (recomputed over the merged runs)."""
    from vlkd.evaluation.results import merge

    _print(merge([_results(store, ref) for ref in refs], baseline))
