"""Following a stage job from the CLI: one line per stage with a progress bar and ETA, or the full log."""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vlkd.cli.output import err_console

# Lines the jobs log that say how far they are: training steps, finetuning runs.
_PROGRESS = re.compile(r"(?:step (\d+)/(\d+) \(|finetuning (\d+)/(\d+) done)")


class StageReporter:
    """Shows a pipeline run (`vlkd.pipeline.Reporter`): with `verbose` every job's log; on a terminal a progress
    bar per stage; otherwise one line per stage when it ends."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.bars = err_console.is_terminal and not verbose

    def follow(self, stage: Any, backend: Any, record: dict[str, Any]) -> Any:
        from vlkd.pipeline import wait_until_finished

        self.started = time.monotonic()
        if self.bars:
            return _bar(stage, backend, record)
        for line in backend.logs(stage.job_id, record, follow=True):
            if self.verbose:
                sys.stdout.write(line)
        return wait_until_finished(backend, stage.job_id, record)

    def done(self, stage: Any) -> None:
        if stage.state == "skipped" or not self.bars:
            took = f"{time.monotonic() - self.started:5.0f} s" if stage.state != "skipped" else "       "
            outputs = ", ".join(stage.outputs)
            err_console.print(f"{stage.key:<24} {stage.state:<10} {took}  {outputs}".rstrip(), highlight=False)


def _bar(stage: Any, backend: Any, record: dict[str, Any]) -> Any:
    from vlkd.pipeline import wait_until_finished

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task(stage.key, total=None)
        for line in backend.logs(stage.job_id, record, follow=True):
            match = _PROGRESS.search(line)
            if match:
                done, total = (int(g) for g in (match.group(1, 2) if match.group(1) else match.group(3, 4)))
                progress.update(task, completed=done, total=total)
        final = wait_until_finished(backend, stage.job_id, record)
        progress.update(task, description=f"{stage.key} {final.value.lower()}", completed=1, total=1)
    return final


def print_stages(run: Any, to: Console = err_console) -> None:
    """One line per stage; on stderr beside a run's progress, on stdout where it is the command's answer."""
    for stage in run.stages:
        outputs = ", ".join(stage.outputs)
        detail = f"{outputs}  {stage.message}".strip() if stage.state in ("skipped", "succeeded") else stage.message
        to.print(f"{stage.key:<24} {stage.state:<10} {stage.job_id or '':<36} {detail}".rstrip(), highlight=False)
