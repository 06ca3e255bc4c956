"""One PNG bar chart per task: each model's main metric (mean over seeds, ± std as error bars), the baseline
row in a darker colour. matplotlib is imported here only, and used through its Agg canvas (no display, no
global pyplot state), so the report can be written on a headless worker."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlkd.evaluation.tasks import TASKS

_BAR, _BASELINE = "#8fb3d9", "#2f5f8f"


def write_charts(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """`out_dir/<task>.png` for every task that was run; returns task -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {task: _chart(results, task, out_dir / f"{task}.png") for task in results["tasks"]}


def _chart(results: Mapping[str, Any], task: str, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    definition = TASKS[task]
    rows = [m["row"] for m in results["models"] if task in results["summary"].get(m["row"], {})]
    stats = [results["summary"][row][task].get(definition.main_metric) for row in rows]
    means = [s["mean"] if s else 0.0 for s in stats]
    errors = [s["std"] if s else 0.0 for s in stats]
    figure = Figure(figsize=(max(4.0, 1.2 * len(rows) + 1.5), 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = [_BASELINE if row == results.get("baseline") else _BAR for row in rows]
    bars = axes.bar(range(len(rows)), means, yerr=errors, capsize=4, color=colours)
    axes.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=2, fontsize=8)
    axes.set_xticks(range(len(rows)), rows, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel(definition.main_metric)
    axes.set_title(f"{definition.title} ({definition.metric_label})")
    axes.margins(y=0.15)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
