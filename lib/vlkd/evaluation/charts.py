"""The report's charts. One PNG bar chart per task: each model's main metric (mean over seeds, ± std as error
bars), the baseline row in a darker colour, a flagged cell's bar hatched and its value marked `!` as in the tables,
the reference rows as dashed lines. Training curves as small multiples (a panel per task x model, a line per
seed): the training loss, and the main metric on dev per epoch (whole epochs on the axis).
matplotlib is imported here only, and used through its Agg canvas (no display, no global pyplot state), so the
report can be written on a headless worker."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlkd.evaluation.references import REFERENCES
from vlkd.evaluation.report import FLAG
from vlkd.evaluation.results import reference_metric
from vlkd.evaluation.tasks import TASKS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_BAR, _BASELINE = "#8fb3d9", "#2f5f8f"
_REFERENCE_STYLES = {"majority": "#b03a2e", "bag_of_words": "#7d6608", "no_answer": "#6c3483"}
CURVES = {"loss_curve": ("Training loss", "training_loss.png"), "dev_curve": ("Dev metric per epoch", "dev_curves.png")}
"""A run's curve -> (its chart's title in the report, its file)."""


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _reference(results: Mapping[str, Any], task: str, name: str) -> float | None:
    """Reference row `name` on the task's main metric, if the results hold one."""
    return reference_metric(results.get("references", {}), task, name, TASKS[task].main_metric)


def write_charts(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """`out_dir/<task>.png` for every task that was run; returns task -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {task: _chart(results, task, out_dir / f"{task}.png") for task in results["tasks"]}


def _chart(results: Mapping[str, Any], task: str, path: Path) -> Path:
    definition = TASKS[task]
    rows = [m["row"] for m in results["models"] if task in results["summary"].get(m["row"], {})]
    stats = [results["summary"][row][task].get(definition.main_metric) for row in rows]
    means = [s["mean"] if s else 0.0 for s in stats]
    errors = [s["std"] if s else 0.0 for s in stats]
    figure = _figure(max(4.0, 1.2 * len(rows) + 1.5), 3.5)
    axes = figure.add_subplot()
    colours = [_BASELINE if row == results.get("baseline") else _BAR for row in rows]
    flagged = [bool(s and s.get("flags")) for s in stats]
    bars = axes.bar(range(len(rows)), means, yerr=errors, capsize=4, color=colours)
    for bar, marked in zip(bars, flagged, strict=True):
        bar.set_hatch("//" if marked else None)
    shown = [f"{m:.1f}" + (f" {FLAG}" if marked else "") for m, marked in zip(means, flagged, strict=True)]
    axes.bar_label(bars, labels=shown, padding=2, fontsize=8)
    for name, reference in REFERENCES.items():
        value = _reference(results, task, name)
        if value is not None:
            axes.axhline(value, linestyle="--", linewidth=1, color=_REFERENCE_STYLES[name], label=reference.label)
    handles = axes.get_legend_handles_labels()[0]
    if any(flagged):
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label=f"{FLAG} a run is flagged"))
    if handles:
        axes.legend(handles=handles, fontsize=7, loc="lower right")
    axes.set_xticks(range(len(rows)), rows, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel(definition.main_metric)
    axes.set_title(f"{definition.title} ({definition.metric_label})")
    axes.margins(y=0.15)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def write_curves(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """`out_dir/training_loss.png` and `out_dir/dev_curves.png`, when runs recorded their curves; returns
    title -> path."""
    out_dir = Path(out_dir)
    written = {}
    for curve, (title, name) in CURVES.items():
        runs = [run for run in results["runs"] if run.get(curve)]
        if runs:
            out_dir.mkdir(parents=True, exist_ok=True)
            written[title] = _small_multiples(results, runs, curve, out_dir / name)
    return written


def _small_multiples(results: Mapping[str, Any], runs: list[Mapping[str, Any]], curve: str, path: Path) -> Path:
    """A panel per task (rows, sharing their y axis) and model (columns), a line per seed."""
    tasks = [task for task in results["tasks"] if any(run["task"] == task for run in runs)]
    rows = [m["row"] for m in results["models"] if any(run["row"] == m["row"] for run in runs)]
    from matplotlib.ticker import MaxNLocator

    figure = _figure(0.4 + 3.0 * len(rows), 0.4 + 2.4 * len(tasks))
    panels = figure.subplots(len(tasks), len(rows), squeeze=False, sharey="row")
    for (i, task), (j, row) in ((t, r) for t in enumerate(tasks) for r in enumerate(rows)):
        axes, definition = panels[i][j], TASKS[task]
        for run in (run for run in runs if run["task"] == task and run["row"] == row):
            x, y = zip(*run[curve], strict=True)
            axes.plot(x, y, marker="o" if curve == "dev_curve" else None, markersize=3, label=f"seed {run['seed']}")
        majority = _reference(results, task, "majority") if curve == "dev_curve" else None
        if majority is not None:
            axes.axhline(majority, linestyle="--", linewidth=1, color=_REFERENCE_STYLES["majority"])
        axes.set_title(f"{definition.title}: {row}", fontsize=8)
        axes.set_xlabel("epoch" if curve == "dev_curve" else "step", fontsize=7)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(definition.main_metric if curve == "dev_curve" else "loss", fontsize=7)
        axes.tick_params(labelsize=7)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
