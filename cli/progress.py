"""Following a stage job from the CLI: one line per stage with a progress bar and ETA (without a terminal, a line
on how far it is every HEARTBEAT_SECONDS), or the full log. Both show the progress the job records in its state in
the store (`vlkd.joblog`: done, total, unit, rate, ETA), which every backend's jobs keep there."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from vlkd.backends.base import JobState
from vlkd.cli.output import err_console
from vlkd.durations import clock
from vlkd.errors import VlkdError

POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 30.0
"""How often a stage followed without a terminal says how far it is: a log or a pipe that shows nothing for the
minutes a teacher trains looks like a hang."""
_UNKNOWN = "-:--:--"
_ENDED = 1 + max(len(state.value) for state in JobState)
"""room after a stage's key for the state its bar ends with (" succeeded")"""


def key_width(keys: Iterable[str]) -> int:
    """How wide a column of stage keys is: the run's longest key (an ablation's run long), at least 24."""
    return max([24, *map(len, keys)])


class StageReporter:
    """Shows a pipeline run (`vlkd.pipeline.Reporter`): with `verbose` every job's log (each line after its stage's
    key where stages run at once); on a terminal a progress bar per stage; otherwise a line on how far a stage is
    every HEARTBEAT_SECONDS, and one when it ends. `keys`: the run's stage keys, which line up. Stages running at
    once are followed from threads of their own: their bars share one display, which stays while any is followed."""

    def __init__(self, verbose: bool, keys: Iterable[str], at_once: bool = False) -> None:
        self.verbose = verbose
        self.bars = err_console.is_terminal and not verbose
        self.width = key_width(keys)
        self.prefix = at_once
        """whether a verbose log line starts with its stage's key: several jobs' logs interleave"""
        self.started: dict[str, float] = {}
        """when each stage being followed began (a stage that ended before it was followed has none)"""
        self.display: Progress | None = None
        self.following = 0
        self.lock = threading.Lock()

    def follow(self, stage: Any, backend: Any, record: dict[str, Any]) -> Any:
        from vlkd.pipeline import wait_until_finished

        self.started[stage.key] = time.monotonic()
        if self.bars:
            with self._bars() as bars:
                return _bar(bars, stage, backend, record)
        if not self.verbose:
            return _heartbeats(stage, backend, record, self.width)
        lead = f"{stage.key} | " if self.prefix else ""
        for line in backend.logs(stage.job_id, record, follow=True):
            sys.stdout.write(lead + line)
        return wait_until_finished(backend, stage.job_id, record)

    def done(self, stage: Any) -> None:
        """The stage's line: its state, how long it took, its outputs and what the run says of it (skipped: why)."""
        started = self.started.pop(stage.key, None)
        if started is None or not self.bars:  # a bar showed the followed stage
            took = f"{time.monotonic() - started:5.0f} s" if started is not None else "       "
            outputs = ", ".join(stage.outputs)
            line = f"{stage.key:<{self.width}} {stage.state:<10} {took}  {outputs}  {stage.message}"
            err_console.print(line.rstrip(), highlight=False)

    def stop(self) -> None:
        """End the bars' display (the run was interrupted while stages were followed)."""
        with self.lock:
            self._end_display()

    @contextlib.contextmanager
    def _bars(self) -> Iterator[Progress]:
        """The display the bars of the stages followed now share: started by the first, ended (its bars left on
        the terminal) with the last."""
        with self.lock:
            if self.display is None:
                self.display = Progress(*_columns(self.width), console=err_console)
                self.display.start()
            self.following += 1
            display = self.display
        try:
            yield display
        finally:
            with self.lock:
                self.following -= 1
                if self.following == 0:
                    self._end_display()

    def _end_display(self) -> None:
        """(with `lock` held)"""
        if self.display is not None:
            self.display.stop()
            self.display = None


def _heartbeats(stage: Any, backend: Any, record: dict[str, Any], width: int) -> JobState:
    """Follow a stage's job until it ends, printing how far it is every HEARTBEAT_SECONDS (from its state in the
    store, as a bar does)."""
    storage = _job_storage(stage.job_id)
    started = time.monotonic()
    beat = started + HEARTBEAT_SECONDS
    while not (status := backend.status(stage.job_id, record)).state.finished:
        if (now := time.monotonic()) >= beat:
            line = f"{stage.key:<{width}} {'running':<10} {now - started:5.0f} s  "
            line += _in_words(_recorded_progress(storage, stage.job_id))
            err_console.print(line, highlight=False, markup=False)
            beat = now + HEARTBEAT_SECONDS
        time.sleep(POLL_SECONDS)
    return status.state


def _in_words(progress: dict[str, Any] | None) -> str:
    """A job's recorded progress (`vlkd.joblog.read_progress`) in words: done/total, rate and ETA."""
    from vlkd.joblog import describe_progress

    return "no progress recorded yet" if progress is None else describe_progress(progress)


def _columns(width: int) -> tuple[ProgressColumn, ...]:
    """A stage's bar: its key padded to `width` and room for the state it ends in (`_ENDED`), done/total in its
    unit, elapsed time and the job's ETA. Every display's columns line up with the others'."""
    return (
        SpinnerColumn(),
        TextColumn(f"{{task.description:<{width + _ENDED}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("eta {task.fields[eta]}"),
    )


def _bar(bars: Progress, stage: Any, backend: Any, record: dict[str, Any]) -> Any:
    """A bar on `bars` for a stage's job until it ends, polling its state in the store (none where the store is
    out of reach from here: a spinner then)."""
    storage = _job_storage(stage.job_id)
    task = bars.add_task(stage.key, total=None, unit="", eta=_UNKNOWN)
    while not (status := backend.status(stage.job_id, record)).state.finished:
        show_progress(bars, task, _recorded_progress(storage, stage.job_id))
        time.sleep(POLL_SECONDS)
    show_progress(bars, task, _recorded_progress(storage, stage.job_id))
    shown = next(shown for shown in bars.tasks if shown.id == task)
    if shown.total is None:  # the job never said how far it was: a full bar for an ended job
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
        eta=_UNKNOWN if eta is None else clock(eta),
    )


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


def print_stages(run: Any, to: Console) -> None:
    """Where a run's stages stand (`vlkd pipeline status`, on stdout: the command's answer): a line per stage, then
    each ablation table's progress."""
    width = key_width(stage.key for stage in run.stages)
    for stage in run.stages:
        outputs = ", ".join(stage.outputs)
        detail = f"{outputs}  {stage.message}".strip() if stage.state in ("skipped", "succeeded") else stage.message
        line = f"{stage.key:<{width}} {stage.state:<10} {stage.job_id or '':<36} {detail}"
        to.print(line.rstrip(), highlight=False)
    print_tables(run, to)


def print_plan(planned: list[Any], at_once: int, backend: str, to: Console) -> None:
    """What a run would do (`vlkd pipeline plan`): a line per stage (run or skip, and why), then how many would run
    and how many at once."""
    width = key_width(stage.key for stage in planned)
    for stage in planned:
        plan = "run" if stage.runs else "skip"
        to.print(f"{stage.key:<{width}} {plan:<4}  {stage.why}", highlight=False, markup=False, soft_wrap=True)
    runs = sum(stage.runs for stage in planned)
    to.print(f"{runs} of {len(planned)} stages would run, at most {at_once} at a time on {backend}", highlight=False)


def print_tables(run: Any, to: Console) -> None:
    """Each ablation table's progress: what the end of `vlkd pipeline run` adds to the stages `StageReporter`
    showed as they ended."""
    from vlkd.ablation_table import progress_lines

    states = {stage.key: stage.state for stage in run.stages}
    for table in run.tables:
        to.print("\n".join(progress_lines(table, states)), highlight=False, markup=False)
