"""Training curves: the metrics log the teacher and student stages keep (`logs/metrics.jsonl` in their artifacts,
one JSON object per line: `step`, `time`, and either the training terms (`loss`, each objective, `lr`, throughput)
or the validation ones (`val_*`)), written by the training loop (`MetricsLog`), read back for `vlkd report show`
and drawn to PNG."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlkd.artifacts import Manifest

LOGS = "logs"
METRICS_FILE = "metrics.jsonl"
METRICS_PATH = f"{LOGS}/{METRICS_FILE}"

# Not curves (as recorded in training, or with `val_` in validation): bookkeeping, the device's use (`vlkd.flops`),
# how the teacher's batches were drawn (`jobs.teacher`: a count of videos, a share), and the median rank, on scales
# of their own.
_NOT_PLOTTED = {
    "step",
    "time",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "samples_per_s",
    "tflops",
    "mfu",
    "mfu_achieved",
    "best_val_loss",
    "queries",
    "median_rank",
    "videos_per_batch",
    "same_video_negatives",
}
_NOT_PLOTTED_PREFIX = "hidden_grad_norm/"
"""the KD-term balance probes (`vlkd.distillation.GRADIENT_NORM`): gradient norms, not losses; the eval report's
balance table shows them"""


_MEASURES: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
    ("validation MLM perplexity", "perplexity", lambda key: key == "val_perplexity"),
    ("validation text-to-video retrieval", "%", lambda key: re.fullmatch(r"val_r\d+", key) is not None),
)
"""Validation figures on scales other than the losses' (title, unit, which keys): each drawn on a panel of its own,
for on the losses' axis a perplexity of 60 flattens every loss (2 to 7) into a line."""


class MetricsLog:
    """Rank 0's metrics: one JSON line per record and TensorBoard scalars, in a folder checkpoints carry."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.directory = directory
        self.enabled = enabled
        self._writer: Any = None
        if enabled:
            from tensorboardX import SummaryWriter

            directory.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(directory))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.directory / METRICS_FILE, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def export_logs(final: Path, directory: Path) -> None:
    """Put the run's metrics (JSON Lines, TensorBoard events) into the artifact being published."""
    if (final / LOGS).is_dir():
        shutil.copytree(final / LOGS, directory / LOGS, dirs_exist_ok=True)


def published_step(manifest: Manifest) -> int | None:
    """The training step of a teacher's or student's published weights: the one its manifest recorded
    (`published_step`), else, for one published before manifests recorded it, what its spec made it: the best step
    when training stopped on validation (`patience`), else the last (`vlkd.checkpoints.published_weights`)."""
    metrics = manifest.metrics
    if "published_step" in metrics:
        return metrics["published_step"]
    patience = (manifest.spec or {}).get("train", {}).get("patience")
    return metrics.get("best_step" if patience is not None else "steps")


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
            plotted = key.removeprefix("val_") not in _NOT_PLOTTED and not key.startswith(_NOT_PLOTTED_PREFIX)
            if plotted and keep(key) and isinstance(value, int | float):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    return series


def plot_curves(
    training: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]],
    title: str,
    path: Path,
    published: int | None = None,
) -> Path:
    """Losses on the left; beside them, each validation measure the run recorded on a panel of its own
    (`_MEASURES`: a student's MLM perplexity, a teacher's retrieval R@k in percent); training solid, validation
    dashed with a dot per validation; on each panel, a dotted line at step `published`, whose weights the run
    published."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def loss(key: str) -> bool:
        return not any(measure(key) for _, _, measure in _MEASURES)

    losses = _series(training, loss) | _series(validation, loss)
    shown = [(f"{title}: losses", "loss", losses)]
    shown += [(name, unit, series) for name, unit, keep in _MEASURES if (series := _series(validation, keep))]
    figure = Figure(figsize=(1 + 5 * len(shown), 4), dpi=100)
    FigureCanvasAgg(figure)
    for axes, (name, unit, series) in zip(figure.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
        for key, (steps, values) in series.items():
            axes.plot(steps, values, "--o" if key.startswith("val_") else "-", markersize=3, label=key)
        if published is not None:
            axes.axvline(published, color="grey", linestyle=":", label=f"published weights (step {published})")
        axes.set(xlabel="step", ylabel=unit, title=name)
        axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
