"""Training curves: the metrics log the teacher and student stages keep (`logs/metrics.jsonl` in their
artifacts, one JSON object per line: `step`, `time`, and either the training terms (`loss`, each objective, `lr`,
throughput) or the validation ones (`val_*`)), read back for `vlkd report show` and drawn to PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGS = "logs"
METRICS_FILE = "metrics.jsonl"
METRICS_PATH = f"{LOGS}/{METRICS_FILE}"

# Not curves: bookkeeping, and figures on another scale than the losses.
_NOT_PLOTTED = {"step", "time", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "best_val_loss", "val_queries"}
_NOT_PLOTTED_PREFIX = "hidden_grad_norm/"
"""the KD-term balance probes (`vlkd.distillation.GRADIENT_NORM`): gradient norms, not losses; the eval report's
balance table shows them"""


def read_curves(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, validation records), each in step order."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    validation = [r for r in records if any(k.startswith("val_") for k in r)]
    training = [r for r in records if not any(k.startswith("val_") for k in r)]
    return training, validation


def _series(records: Sequence[dict[str, Any]], keep: Any) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            plotted = key not in _NOT_PLOTTED and not key.startswith(_NOT_PLOTTED_PREFIX)
            if plotted and keep(key) and isinstance(value, int | float):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    return series


def plot_curves(
    training: Sequence[dict[str, Any]], validation: Sequence[dict[str, Any]], title: str, path: Path
) -> Path:
    """Losses (training, solid; validation, dashed) on the left; validation retrieval (R@k in percent) on the
    right when the run recorded it (teachers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = _series(training, lambda k: True) | _series(
        validation, lambda k: not k.startswith("val_r") and k != "val_median_rank"
    )
    retrieval = _series(validation, lambda k: k.startswith("val_r") and k != "val_median_rank")
    figure = Figure(figsize=(11 if retrieval else 6, 4), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2 if retrieval else 1, squeeze=False)[0]
    for key, (steps, values) in losses.items():
        panels[0].plot(steps, values, "--" if key.startswith("val_") else "-", label=key)
    panels[0].set(xlabel="step", ylabel="loss", title=f"{title}: losses")
    panels[0].legend(fontsize=7)
    if retrieval:
        for key, (steps, values) in retrieval.items():
            panels[1].plot(steps, values, marker="o", label=key)
        panels[1].set(xlabel="step", ylabel="%", title="validation text-to-video retrieval")
        panels[1].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
