"""Two tables of the eval report that compare no rows with a baseline: the teacher's text-to-video retrieval
against what chance scores, and what making each model cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlkd.evaluation.table_text import MISSING

RETRIEVAL_COLUMNS = (("R@1", "r1"), ("R@5", "r5"), ("R@10", "r10"), ("Median rank", "median_rank"))


def retrieval_rows(retrieval: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the teacher retrieval table: R@1/5/10 in percent and the median rank, then what chance
    scores with as many queries (once per number of queries; none for results that did not record it)."""
    rows = [
        [label, *(MISSING if key not in values else f"{values[key]:.1f}" for _, key in RETRIEVAL_COLUMNS)]
        for label, values in retrieval.items()
    ]
    counts = dict.fromkeys(round(values["queries"]) for values in retrieval.values() if values.get("queries"))
    rows += [[f"chance ({n} queries)", *(f"{_chance(key, n):.1f}" for _, key in RETRIEVAL_COLUMNS)] for n in counts]
    return ["Teacher", *(name for name, _ in RETRIEVAL_COLUMNS)], rows


def _chance(key: str, queries: int) -> float:
    """What ranking the videos at random scores on `key` with `queries` captions, each of one of as many videos."""
    if key == "median_rank":
        return (queries + 1) / 2
    return 100.0 * min(int(key.removeprefix("r")) / queries, 1.0)


RETRIEVAL_NOTE = (
    "Each caption ranks the held-out videos by cosine similarity. A tie counts at its expected place under a random "
    "order (a collapsed teacher scores chance, not 100%); the median rank of an even count is the mean of the two "
    "middle ranks. Chance, for N queries: R@k = k / N, median rank (N + 1) / 2."
)
COST_NOTE = (
    "What making each model took: the resources its job held over its wall time (and, for students, their teacher's)."
)
_COST_COLUMNS = {
    "wall_seconds": "Wall s",
    "cpu_hours": "CPU-h",
    "gpu_hours": "GPU-h",
    "teacher_cpu_hours": "Teacher CPU-h",
    "teacher_gpu_hours": "Teacher GPU-h",
}


def cost_rows(models: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the cost table; a cost not recorded (an artifact made before vlkd kept costs) is "-"."""
    rows = [
        [m["row"], *(f"{m['cost'][k]:.4g}" if k in m.get("cost", {}) else "-" for k in _COST_COLUMNS)] for m in models
    ]
    return ["Model", *_COST_COLUMNS.values()], rows
