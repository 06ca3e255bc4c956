"""The eval stage's results: every run's numbers, and their mean and spread over seeds.

`results.json` (FORMAT):
```
{"format": "vlkd.eval-results/v2",
 "baseline": "<row>" | null,            # the row the report compares every other row with
 "models": [{"row", "ref", "lineage": {"teacher", "kd_objectives", "corpus", ...},    # report order
             "cost": {"wall_seconds", "cpu_hours", "gpu_hours", "teacher_cpu_hours", "teacher_gpu_hours"}}],
 "tasks": ["sst2", ...],                # the tasks run, in the registry's order
 "runs": [{"row", "ref", "lineage", "task", "seed", "metrics": {name: percent}, "examples", "seconds",
           "worker": "host:pid",        # the process that finetuned: a Ray task's, or the job's own
           "loss_curve": [[step, mean loss]], "dev_curve": [[epoch, main metric]],    # how it trained
           "predicted": {label: count},  # main dev file (extractive QA: `scoring.answer_counts`)
           "correct": "0110...",        # main dev file, per example: right (the diagnostic: for its accuracies)
           "labels": "0210..."}],       # main dev file, per example: the predicted label's index (the diagnostic)
 "clusters": {task: "0 0 0 1 1 ..."},   # main dev file, per example: its paragraph (SQuAD), story (TRACIE), pair
 "subsets": {task: {metric: "0110..."}},  # main dev file: the examples a metric is a mean of `correct` over
 "gold": {task: "0120..."},             # main dev file, per example: the gold label's index, where `labels` is kept
 "references": {task: {"majority" | "bag_of_words" | "no_answer": {"metrics", "correct", "predicted"}}},  # not averaged
 "summary": {row: {task: {metric: {"mean", "std", "median", "seeds"}}}},   # std: sample std over seeds, 0 for one
                          # the main metric's also has "flags": [{"seed", "flags": ["did not learn: ..."]}]
 "differences": {row: {key: {"difference", "low", "high", "within_noise", "over_seeds"}}},  # vs baseline
                          # key: a task (its main metric), "task/metric" (`differences.difference_key`), "average"
 "retrieval": {teacher label: {"r1", "r5", "r10", "median_rank", "queries"}},
 "notes": ["..."],
 "tables": [{"name", "title", "rows": [[row, label]]}]}   # ablation tables (Tables 3, 5, 6): rows in their order
```
`summary` and `differences` are derived from `runs`, `clusters`, `subsets`, `gold` and `references` (`flags`,
`differences`); `merge` recomputes them, and keeps no tables (they name one eval's rows). `clusters`
(`bootstrap.Clusters`), `subsets` and `gold` are stored once per task, not per run; a task without clusters has
independent dev examples. A v1 document (before runs kept curves and outcomes) loads with no flags nor intervals; a
v2 one from before ablation tables, with none; one from before clusters, with every dev example its own cluster;
one from before subsets, with no interval on the diagnostic's per-category accuracies; one from before labels and
gold, with none on its R3s.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlkd.errors import DataError
from vlkd.evaluation.bootstrap import Clusters
from vlkd.evaluation.differences import differences
from vlkd.evaluation.flags import run_flags
from vlkd.evaluation.tasks import TASKS

FORMAT = "vlkd.eval-results/v2"
_OLDER_FORMATS = ("vlkd.eval-results/v1",)
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class RunRecord:
    """One finetuning run: a model (its report row, artifact ref and lineage) on a task with a seed."""

    row: str
    ref: str
    task: str
    seed: int
    metrics: dict[str, float]
    lineage: dict[str, Any] = field(default_factory=dict)
    examples: int | None = None
    seconds: float | None = None
    worker: str | None = None
    """host:pid of the process that ran it (a Ray task's, or the eval job's own)"""
    loss_curve: list[list[float]] = field(default_factory=list)
    """[step, mean training loss over the window of steps ending there]"""
    dev_curve: list[list[float]] = field(default_factory=list)
    """[epoch, main metric on dev]"""
    predicted: dict[str, int] | None = None
    """main dev file: how many examples got each label or choice index"""
    correct: str | None = None
    """main dev file: "1" per example right, "0" per one wrong (`scoring.Scored.correct`)"""
    clusters: Clusters | None = None
    """main dev file: each example's cluster, where the task's examples come in clusters; results.json keeps it
    once per task (`clusters`), not in the run"""
    subsets: dict[str, str] | None = None
    """main dev file: per metric that is a mean of `correct` over some examples, which (`scoring.Scored.subsets`);
    kept once per task (`subsets`), as `clusters` is"""
    labels: str | None = None
    """main dev file: each example's predicted label, where a metric is a correlation (`scoring.Scored.labels`)"""
    gold: str | None = None
    """main dev file: each example's gold label, as `labels` has them; kept once per task (`gold`)"""


def build_results(
    records: Iterable[RunRecord],
    baseline: str | None = None,
    retrieval: Mapping[str, Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
    costs: Mapping[str, Mapping[str, float]] | None = None,
    references: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    tables: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The `results.json` document of `records` (see the module docstring), checked for consistency. `costs`:
    what making each row's model took (from its manifest; the teacher's too for students). `references`: task
    -> reference name -> its scores (`references.score_reference`). `tables`: the ablation tables, as
    results.json's `tables` holds them."""
    records = list(records)
    models: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str, int]] = set()
    for record in records:
        if record.task not in TASKS:
            raise DataError(f"run of {record.row}: unknown task {record.task!r}; available: {', '.join(TASKS)}")
        model = models.setdefault(
            record.row,
            {
                "row": record.row,
                "ref": record.ref,
                "lineage": record.lineage,
                "cost": {**(costs or {}).get(record.row, {})},
            },
        )
        if model["ref"] != record.ref:
            raise DataError(
                f"row {record.row!r} names two models ({model['ref']}, {record.ref}): give them distinct labels"
            )
        key = (record.row, record.task, record.seed)
        if key in seen:
            raise DataError(f"row {record.row!r}, task {record.task}, seed {record.seed} appears twice")
        seen.add(key)
    if baseline is not None and baseline not in models:
        raise DataError(f"baseline {baseline!r} is not a row; rows: {', '.join(models) or 'none'}")
    for table in tables:
        if unknown := [row for row, _ in table["rows"] if row not in models]:
            raise DataError(
                f"table {table['name']!r} shows rows with no runs: {', '.join(unknown)}; rows: {', '.join(models)}"
            )
    runs = [{key: value for key, value in asdict(record).items() if key not in _PER_TASK} for record in records]
    clusters, subsets, gold = (_per_task(records, name) for name in _PER_TASK)
    references = {
        task: {name: dict(scores) for name, scores in refs.items()} for task, refs in (references or {}).items()
    }
    return {
        "format": FORMAT,
        "baseline": baseline,
        "models": list(models.values()),
        "tasks": [task for task in TASKS if any(r.task == task for r in records)],
        "runs": runs,
        "clusters": clusters,
        "subsets": subsets,
        "gold": gold,
        "references": references,
        "summary": summarize(records, references),
        "differences": differences(runs, baseline, clusters, subsets, gold),
        "retrieval": {label: dict(values) for label, values in (retrieval or {}).items()},
        "notes": list(notes),
        "tables": [{**table, "rows": [list(row) for row in table["rows"]]} for table in tables],
    }


def summarize(
    records: Sequence[RunRecord], references: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """row -> task -> metric -> {"mean", "std" (sample, over seeds; 0 for one), "median", "seeds"}; the task's
    main metric also has "flags", each flagged run's seed and flags (`{"seed": 0, "flags": ["did not learn: ..."]}`),
    judged against the majority-class reference of `references` where there is one."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for record in records:
        for metric, value in record.metrics.items():
            values[(record.row, record.task, metric)].append(float(value))
    summary: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (row, task, metric), numbers in values.items():
        summary.setdefault(row, {}).setdefault(task, {})[metric] = {
            "mean": math.fsum(numbers) / len(numbers),
            "std": _sample_std(numbers),
            "median": statistics.median(numbers),
            "seeds": len(numbers),
        }
    _flag(summary, records, references or {})
    return summary


def _flag(
    summary: dict[str, dict[str, dict[str, dict[str, Any]]]],
    records: Sequence[RunRecord],
    references: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    """Put each run's flags beside its task's main metric in `summary`."""
    for record in records:
        task = TASKS[record.task]
        main = summary.get(record.row, {}).get(record.task, {}).get(task.main_metric)
        if main is not None:
            majority = reference_metric(references, record.task, "majority", task.main_metric)
            flags = run_flags(asdict(record), task, majority)
            main.setdefault("flags", [])
            if flags:
                main["flags"].append({"seed": record.seed, "flags": flags})


def reference_metric(
    references: Mapping[str, Mapping[str, Mapping[str, Any]]], task: str, name: str, metric: str
) -> float | None:
    """Reference row `name`'s `metric` on `task` in results.json's `references`; None where there is none."""
    return references.get(task, {}).get(name, {}).get("metrics", {}).get(metric)


def _sample_std(numbers: Sequence[float]) -> float:
    if len(numbers) < 2:
        return 0.0
    mean = math.fsum(numbers) / len(numbers)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1))


_PER_TASK = ("clusters", "subsets", "gold")
"""The run records' fields that describe the task's dev file, not the run: results.json keeps each once per task."""


def _per_task(records: Sequence[RunRecord], name: str) -> dict[str, Any]:
    """task -> the runs' field `name` (one of `_PER_TASK`), as its runs recorded it, in the registry's order. Runs of
    one task that group its dev set differently were scored on different dev files."""
    found: dict[str, Any] = {}
    for record in records:
        value = getattr(record, name)
        if value is not None and found.setdefault(record.task, value) != value:
            raise DataError(
                f"runs on {record.task} group its dev examples differently (row {record.row!r}, seed {record.seed}):"
                " were they scored on different dev files? Compare runs on the same ones"
            )
    return {task: found[task] for task in TASKS if task in found}


def records_of(results: Mapping[str, Any]) -> list[RunRecord]:
    """The document's runs, each with its task's clusters, subsets and gold labels again."""
    kept = {name: results.get(name, {}) for name in _PER_TASK}
    return [
        RunRecord(**run, **{name: by_task.get(run["task"]) for name, by_task in kept.items()})
        for run in results["runs"]
    ]


def merge(results_list: Sequence[Mapping[str, Any]], baseline: str | None = None) -> dict[str, Any]:
    """One results document from several (`vlkd report compare`): all their runs, retrieval rows and notes.

    A row name used by two inputs for different models is renamed `row (ref)` in each, so both stay; the same
    model in two inputs stays one row. The baseline is `baseline`, else the first input's.
    """
    refs_by_row: dict[str, set[str]] = defaultdict(set)
    for results in results_list:
        for model in results["models"]:
            refs_by_row[model["row"]].add(model["ref"])
    records, retrieval, notes, unique_runs = [], {}, [], set()
    references: dict[str, dict[str, Any]] = {}
    for results in results_list:
        for task, refs in results.get("references", {}).items():
            references[task] = refs | references.get(task, {})  # the first document's reference of a task
        for record in records_of(results):
            if len(refs_by_row[record.row]) > 1:
                record = RunRecord(**{**asdict(record), "row": f"{record.row} ({record.ref})"})
            key = (record.row, record.task, record.seed)
            if key not in unique_runs:  # the same run in two documents (an artifact compared with itself)
                unique_runs.add(key)
                records.append(record)
        retrieval |= results.get("retrieval", {})
        notes += [note for note in results.get("notes", []) if note not in notes]
    if baseline is None:
        baseline = _renamed_baseline(results_list, refs_by_row)
    return build_results(records, baseline, retrieval, notes, references=references)


def _renamed_baseline(results_list: Sequence[Mapping[str, Any]], refs_by_row: Mapping[str, set[str]]) -> str | None:
    for results in results_list:
        row = results.get("baseline")
        if row is not None:
            ref = next(m["ref"] for m in results["models"] if m["row"] == row)
            return f"{row} ({ref})" if len(refs_by_row[row]) > 1 else row
    return None


def write_results(results: Mapping[str, Any], path: Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_results(path: Path) -> dict[str, Any]:
    """A `results.json`, checked to be one; an older format's rebuilt in this one (its runs kept nothing to
    flag or compare by example: no flags, no intervals)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read eval results ({exc}); expected an eval artifact's {RESULTS_FILE}"
        ) from None
    found = results.get("format") if isinstance(results, dict) else type(results).__name__
    if found in _OLDER_FORMATS:
        costs = {model["row"]: model.get("cost", {}) for model in results["models"]}
        return build_results(records_of(results), results["baseline"], results["retrieval"], results["notes"], costs)
    if found != FORMAT:
        raise DataError(f"{path}: format {found!r}, expected {FORMAT!r}: is it an eval artifact's {RESULTS_FILE}?")
    return results
