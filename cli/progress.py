"""Following a stage job from the CLI: one line per stage with a progress bar and ETA, or the full log. A bar shows
the progress the job records in its state in the store (`vlkd.joblog`: done, total, unit, rate, ETA), which every
backend's jobs keep there."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from vlkd.cli.output import err_console
from vlkd.errors import VlkdError

POLL_SECONDS = 1.0
_UNKNOWN = "-:--:--"


def key_width(keys: Iterable[str]) -> int:
    """How wide a column of stage keys is: the run's longest key (an ablation's run long), at least 24."""
    return max([24, *map(len, keys)])


class StageReporter:
    """Shows a pipeline run (`vlkd.pipeline.Reporter`): with `verbose` every job's log; on a terminal a progress
    bar per stage; otherwise one line per stage when it ends. `keys`: the run's stage keys, which line up."""

    def __init__(self, verbose: bool, keys: Iterable[str]) -> None:
        self.verbose = verbose
        self.bars = err_console.is_terminal and not verbose
        self.width = key_width(keys)
        self.started: float | None = None
        """when the stage being followed began; None while none is (a stage that ended before it was followed)"""

    def follow(self, stage: Any, backend: Any, record: dict[str, Any]) -> Any:
        from vlkd.pipeline import wait_until_finished

        self.started = time.monotonic()
        if self.bars:
            return _bar(stage, backend, record, self.width)
        for line in backend.logs(stage.job_id, record, follow=True):
            if self.verbose:
                sys.stdout.write(line)
        return wait_until_finished(backend, stage.job_id, record)

    def done(self, stage: Any) -> None:
        started, self.started = self.started, None
        if started is None or not self.bars:  # a bar showed the followed stage
            took = f"{time.monotonic() - started:5.0f} s" if started is not None else "       "
            outputs = ", ".join(stage.outputs)
            line = f"{stage.key:<{self.width}} {stage.state:<10} {took}  {outputs}"
            err_console.print(line.rstrip(), highlight=False)


def _bar(stage: Any, backend: Any, record: dict[str, Any], width: int) -> Any:
    """A bar for a stage's job until it ends, polling its state in the store (none where the store is out of
    reach from here: a spinner then); its key padded to `width`."""
    columns = (
        SpinnerColumn(),
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("eta {task.fields[eta]}"),
    )
    storage = _job_storage(stage.job_id)
    with Progress(*columns, console=err_console) as bars:
        task = bars.add_task(stage.key, total=None, unit="", eta=_UNKNOWN)
        while not (status := backend.status(stage.job_id, record)).state.finished:
            show_progress(bars, task, _recorded_progress(storage, stage.job_id))
            time.sleep(POLL_SECONDS)
        show_progress(bars, task, _recorded_progress(storage, stage.job_id))
        if bars.tasks[0].total is None:  # the job never said how far it was: a full bar for an ended job
            bars.update(task, completed=1, total=1)
        bars.update(task, description=f"{stage.key} {status.state.value.lower()}")
    return status.state


def show_progress(bars: Progress, task: TaskID, progress: dict[str, Any] | None) -> None:
    """Put a job's recorded progress (`vlkd.joblog.read_progress`) on its bar."""
    if progress is None:
        return
    eta = progress.get("eta_seconds")
    bars.update(
        task,
        completed=progress["done"],
        total=progress["total"],
        unit=f"{progress['unit']}s",
        eta=_UNKNOWN if eta is None else _clock(eta),
    )


def _clock(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


def _job_storage(job_id: str) -> Any:
    """The store the job records itself in, as its submission was remembered here; None if unknown."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.jobstate import recall

    try:
        return ArtifactStore.open(recall(job_id)["store"]).storage
    except VlkdError:
        return None


def _recorded_progress(storage: Any, job_id: str) -> dict[str, Any] | None:
    from vlkd.joblog import read_progress

    if storage is None:
        return None
    try:
        return read_progress(storage, job_id)
    except VlkdError:
        return None  # the store is briefly out of reach: the bar stays as it was


def print_stages(run: Any, to: Console = err_console) -> None:
    """One line per stage, then each ablation table's progress; on stderr beside a run's progress, on stdout where
    it is the command's answer."""
    from vlkd.ablation_table import progress_lines

    width = key_width(stage.key for stage in run.stages)
    for stage in run.stages:
        outputs = ", ".join(stage.outputs)
        detail = f"{outputs}  {stage.message}".strip() if stage.state in ("skipped", "succeeded") else stage.message
        to.print(f"{stage.key:<{width}} {stage.state:<10} {stage.job_id or '':<36} {detail}".rstrip(), highlight=False)
    states = {stage.key: stage.state for stage in run.stages}
    for table in run.tables:
        to.print("\n".join(progress_lines(table, states)), highlight=False, markup=False)
