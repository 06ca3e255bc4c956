"""A job's own record in the artifact store, under `jobs/<job id>/`: its log and its state.

KubeRay deletes a RayJob's cluster when the job ends and a Ray head keeps logs only on its own disk, so a log
read from the cluster is gone with it. Every job therefore copies its output (the driver's, which carries its Ray
workers' lines as Ray forwards them) to the store while it runs, in chunks written every few seconds: a crash
loses at most the last few seconds. The state says whether the job runs, waits for resources (and why), or ended
(and how: its exit code and, if it failed, its error in one line): what `vlkd status` and `vlkd logs` fall back on
once the cluster is gone. While the job runs or waits, its state is rewritten every HEARTBEAT_SECONDS, so a driver
that died without recording its end (killed, its node lost) shows as one that stopped beating: after LOST_AFTER,
`vlkd status` calls it lost. How long ago the state was written is the store's word (`read_state`), not the
`updated_at` the job's clock put in it: a pod's clock a few minutes off must not make a healthy job lost, nor its
record look older than the submission that started it.

The state also says how far the job is (`progress`: done, total, unit, rate, ETA), what progress bars read. A job
reports it with `report_progress`, which prints one event line (PROGRESS_EVENT and a JSON object); the recorder
picks the events out of the output it copies. A line is the one channel that reaches the driver, where the recorder
lives, from wherever the work runs, on every backend: the job's own process, and Ray Train workers and Ray tasks,
whose output Ray forwards to the driver (as it does the worker banner). Reporting through Ray Train's own metrics
would reach the driver only with a checkpoint, and a worker writing the state itself would race the recorder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from vlkd.errors import NotFoundError, first_line
from vlkd.storage import Storage

log = logging.getLogger("vlkd.joblog")

JOB_PREFIX = "jobs/{job_id}"
LOG_PREFIX = JOB_PREFIX + "/log/"
STATE_KEY = JOB_PREFIX + "/state.json"
# A training job's checkpoints (`vlkd.checkpoints.RunPlace`): what submitting its id again resumes from.
CHECKPOINT_PREFIX = "checkpoints/{job_id}"
CHUNK_SECONDS = 5.0
HEARTBEAT_SECONDS = 30.0
LOST_AFTER = timedelta(minutes=5)  # ten missed heartbeats: more than a store's hiccup, less than a user's patience

RUNNING, WAITING, ENDED = "running", "waiting", "ended"

# Ray prefixes each line it forwards from a worker process with `(ActorName pid=N[, ip=A])`; the train loop prints
# WORKER_BANNER once per worker, which ties that pid to the worker's rank.
WORKER_BANNER = "vlkd train worker rank {rank} of {world}"
_ANSI = re.compile(r"^\x1b\[[0-9;]*m|\x1b\[0m")
_SOURCE = re.compile(r"^\((?P<actor>[\w.]+) pid=(?P<pid>\d+)(?:, ip=[^)]*)?\)\s?")
_BANNER = re.compile(r"vlkd train worker rank (?P<rank>\d+) of \d+")
PROGRESS_EVENT = "vlkd-progress "
_EVENT = PROGRESS_EVENT.encode()
# Bytes of an unfinished line held back: to find an event in (events are far shorter) and to store the line whole.
_LONGEST_PARTIAL = 4096


def log_prefix(job_id: str) -> str:
    return LOG_PREFIX.format(job_id=job_id)


def read_state(storage: Storage, job_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The job's state as it last recorded it, None before it has, with `stored_at`: when the store got it, on the
    reader's clock (`now`, an aware datetime; default this machine's), from how long ago the store's own clock says
    it was written (`Storage.age`)."""
    key = STATE_KEY.format(job_id=job_id)
    try:
        state = json.loads(storage.read_bytes(key))
        age = storage.age(key)  # after the read: a write in between makes the state look newer, never older
    except NotFoundError:
        return None
    age = timedelta(seconds=round(age.total_seconds()))  # to the second, as S3 dates objects, whatever the store
    return {**state, "stored_at": ((now or datetime.now(timezone.utc)) - age).isoformat()}


def read_progress(storage: Storage, job_id: str) -> dict[str, Any] | None:
    """How far the job is, as it last recorded: `done` of `total` `unit`s, `rate` per second and `eta_seconds`
    (None while unknown); None before its first report."""
    key = STATE_KEY.format(job_id=job_id)
    return json.loads(storage.read_bytes(key)).get("progress") if storage.exists(key) else None


def describe_progress(progress: dict[str, Any]) -> str:
    """Recorded progress (`read_progress`) in words, as far as the job has said: `150/1000 steps, 3.41 steps/s,
    eta 0:04:10` (days past a day), for `vlkd status` and a followed job's heartbeat alike."""
    from vlkd.durations import clock

    unit, rate, eta = f"{progress['unit']}s", progress.get("rate"), progress.get("eta_seconds")
    parts = [f"{progress['done']}/{progress['total']} {unit}"]
    parts += [f"{rate:.3g} {unit}/s"] if rate else []
    parts += [f"eta {clock(eta)}"] if eta is not None else []
    parts += [describe_utilisation(progress["utilisation"])] if progress.get("utilisation") else []
    return ", ".join(parts)


def describe_utilisation(usage: dict[str, float]) -> str:
    """`41.2 TFLOP/s per worker, MFU 45% (achieved 38%)`: the counted MFU first, the one papers compare
    (`vlkd.flops`); without a known peak only the rate."""
    text = f"{usage['tflops']:.3g} TFLOP/s per worker" if "tflops" in usage else ""
    if "mfu" in usage:
        text += f", MFU {100 * usage['mfu']:.1f}% (achieved {100 * usage.get('mfu_achieved', 0.0):.1f}%)"
    return text.lstrip(", ")


def report_progress(
    done: int, total: int, unit: str, rate: float | None = None, utilisation: dict[str, float] | None = None
) -> None:
    """Say that `done` of `total` `unit`s (training steps, finetuning runs) are done, at `rate` units per second
    (and, for training, how much of the device it uses: `tflops` per worker, `mfu` and `mfu_achieved` where the
    device's peak is known; `vlkd.flops`); the job's recorder keeps it in the job's state. Call it from any
    process of the job (see the module's doc)."""
    event: dict[str, Any] = {"done": done, "total": total, "unit": unit, "rate": rate}
    if utilisation:
        event["utilisation"] = utilisation
    say(PROGRESS_EVENT + json.dumps(event))


def say(line: str) -> None:
    """Write `line` to this process's stdout once. Not `print`: in a Ray Train worker, Ray Train's patched print
    (ray/train/v2/_internal/logging/patch_print.py) writes the line and logs it too, and Ray forwards both copies
    to the driver, so each event and banner was in the job's log twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def has_log(storage: Storage, job_id: str) -> bool:
    return any(True for _ in storage.list(log_prefix(job_id)))


def read_log(storage: Storage, job_id: str) -> Iterator[str]:
    """The stored log, line by line, in the order it was written (chunks are numbered)."""
    keys = sorted(info.key for info in storage.list(log_prefix(job_id)))
    pending = ""
    for key in keys:
        text = pending + storage.read_bytes(key).decode(errors="replace")
        *lines, pending = text.split("\n")
        yield from (line + "\n" for line in lines)
    if pending:
        yield pending + "\n"


def worker_lines(lines: Iterator[str], rank: int, named: set[int] | None = None) -> Iterator[str]:
    """The lines of training worker `rank` in a driver log: those Ray forwarded from the pids whose banner named
    that rank (a replaced worker has a new pid and prints its banner again). The Ray prefix is removed. `named`
    collects the ranks of every banner read, to say which workers a log has."""
    pids: set[str] = set()
    for line in lines:
        match = _SOURCE.match(_ANSI.sub("", line))
        if not match:
            continue
        banner = _BANNER.search(line)
        if banner and named is not None:
            named.add(int(banner.group("rank")))
        if banner and int(banner.group("rank")) == rank:
            pids.add(match.group("pid"))
        if match.group("pid") in pids:
            yield _ANSI.sub("", line)[match.end() :]


class JobRecorder:
    """Copies this process's stdout and stderr (file descriptors 1 and 2, so Ray's forwarded worker lines and
    C-level output are caught too) to the store in numbered chunks, and keeps the job's state there, rewritten every
    `heartbeat` seconds while the job lives.

    Use as a context manager around the job; `waiting(why, recheck)` records what it waits for in between, and the
    progress events in the output (`report_progress`) are kept as the state's `progress`, written with the next
    chunk: at most every `interval` seconds however often they come."""

    def __init__(
        self, storage: Storage, job_id: str, interval: float = CHUNK_SECONDS, heartbeat: float = HEARTBEAT_SECONDS
    ) -> None:
        self.storage = storage
        self.job_id = job_id
        self.interval = interval
        self.heartbeat = heartbeat
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()  # the main thread and the upload thread both write the state
        self._state_written = 0.0  # time.monotonic() of the last write
        self._progress: dict[str, Any] | None = None  # replaced whole, never changed: the tee waits on no lock
        self._progress_written: dict[str, Any] | None = None
        self._unfinished_lines: dict[int, bytes] = {}  # per pipe: the end of the output after its last newline
        self._stop = threading.Event()
        self._chunk = self._next_chunk()
        self._state: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._recheck: Callable[[], list[str]] | None = None
        self._error: str | None = None

    def _next_chunk(self) -> int:
        """A resubmitted job id appends to the log its earlier attempts left."""
        names = [info.key.rsplit("/", 1)[-1] for info in self.storage.list(log_prefix(self.job_id))]
        return max((int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()), default=0) + 1

    def __enter__(self) -> JobRecorder:
        self._set_state(RUNNING)
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self._pipes: dict[int, int] = {}  # read end -> the descriptor it stands in for
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._pipes[read_end] = fd
        self._threads = [
            threading.Thread(target=self._tee, name="vlkd-log-tee", daemon=True),
            threading.Thread(target=self._upload_every_interval, name="vlkd-log-upload", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # Ray's own processes may hold the pipe's other end: do not wait for its EOF
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for descriptor in (*self._saved.values(), *self._pipes):
            os.close(descriptor)
        if exc is not None and not isinstance(exc, SystemExit | KeyboardInterrupt):
            # Python prints the traceback to the console after this; the stored log needs its own copy.
            self._buffer += "".join(traceback.format_exception(kind, exc, tb)).encode()
            self._error = self._error or f"{type(exc).__name__}: {first_line(exc)}"
        self._flush()
        code = 0 if exc is None else (exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)
        self._set_state(ENDED, exit_code=code, **({"error": self._error} if self._error and code else {}))

    def failed(self, error: str) -> None:
        """Record `error` (one line) as why the job fails, written with its end: what `vlkd status` shows."""
        self._error = error

    def waiting(self, why: list[str], recheck: Callable[[], list[str]]) -> None:
        """Record why the job cannot start yet; `recheck` (called every interval) says when it can."""
        self._recheck = recheck
        self._set_state(WAITING, why_pending=why)

    def progress(
        self, done: int, total: int, unit: str, rate: float | None = None, utilisation: dict[str, float] | None = None
    ) -> None:
        """Record how far the job is (see `report_progress`); written with the next chunk, not at once."""
        eta = 0.0 if done >= total else (round((total - done) / rate, 1) if rate else None)
        self._progress = {"done": done, "total": total, "unit": unit, "rate": rate, "eta_seconds": eta}
        if utilisation:
            self._progress["utilisation"] = utilisation

    def _set_state(self, state: str, **extra: Any) -> None:
        with self._state_lock:
            self._state = {"job_id": self.job_id, "state": state, **extra}
        self._write_state()

    def _write_state(self) -> None:
        with self._state_lock:
            progress = self._progress
            if progress is not None:
                self._state["progress"] = progress
            self._state["updated_at"] = datetime.now(timezone.utc).isoformat()
            self.storage.write_bytes(STATE_KEY.format(job_id=self.job_id), json.dumps(self._state, indent=2).encode())
            self._state_written = time.monotonic()
            self._progress_written = progress

    def _tee(self) -> None:
        """Pass everything on to where the output went before, and keep a copy for the store a whole line at a time.
        stdout and stderr are two pipes, and `print` writes a line's text and its newline apart: kept as they came,
        the other stream's output could land between them (a CI run once stored "from stderrfrom stdout"). A line
        still unfinished after 0.1 s without output, or longer than _LONGEST_PARTIAL, is kept as it is: a line that
        never ends still gets there, and what is held back stays bounded."""
        open_ends = set(self._pipes)
        unfinished: dict[int, bytes] = {}
        while open_ends:
            # Read the flag before waiting: output written before it was set is then in the pipes and `select`
            # sees it. Read after an empty wait, it could be set (and the last lines written) in between.
            stopping = self._stop.is_set()
            ready, _, _ = select.select(list(open_ends), [], [], 0.1)
            if not ready:
                self._keep(b"".join(unfinished.values()))
                unfinished.clear()
                if stopping:
                    return  # drained
            for read_end in ready:
                data = os.read(read_end, 65536)
                if not data:
                    open_ends.discard(read_end)
                    self._keep(unfinished.pop(read_end, b""))
                    continue
                os.write(self._saved[self._pipes[read_end]], data)
                lines, newline, rest = (unfinished.pop(read_end, b"") + data).rpartition(b"\n")
                self._keep(lines + newline)
                if len(rest) > _LONGEST_PARTIAL:  # output that never ends a line (a progress bar): held no longer
                    self._keep(rest)
                elif rest:
                    unfinished[read_end] = rest
                self._record_events(read_end, data)

    def _keep(self, data: bytes) -> None:
        """Add output to what the next upload writes to the store."""
        if data:
            with self._lock:
                self._buffer += data

    def _record_events(self, read_end: int, data: bytes) -> None:
        """Record the progress events among the lines `data` completes; an event line's start may carry Ray's
        prefix (`(RayTrainWorker pid=N)`, in colour)."""
        lines, _, unfinished = (self._unfinished_lines.pop(read_end, b"") + data).rpartition(b"\n")
        self._unfinished_lines[read_end] = unfinished[-_LONGEST_PARTIAL:]
        if _EVENT not in lines:
            return
        for line in lines.split(b"\n"):
            _, found, event = line.partition(_EVENT)
            if not found:
                continue
            try:
                record, _ = json.JSONDecoder().raw_decode(event.decode(errors="replace"))
                usage = record.get("utilisation")
                self.progress(
                    int(record["done"]), int(record["total"]), str(record["unit"]), record.get("rate"),
                    {str(k): float(v) for k, v in usage.items()} if isinstance(usage, dict) else None,
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                continue  # a line that only mentions the marker

    def _upload_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._flush()
                if self._recheck is not None:
                    self._update_wait(self._recheck())
                if (
                    self._progress is not self._progress_written
                    or time.monotonic() - self._state_written >= self.heartbeat
                ):
                    self._write_state()  # new progress, or the same state with updated_at refreshed
            except Exception as exc:  # a store that is briefly unreachable must not end the job or its log
                log.warning("the job's log could not reach the store (%s); retrying", exc)

    def _update_wait(self, why: list[str]) -> None:
        if not why:
            self._recheck = None
            self._set_state(RUNNING)
        elif why != self._state.get("why_pending"):
            self._set_state(WAITING, why_pending=why)

    def _flush(self) -> None:
        """Write what arrived since the last chunk as the next chunk; kept for the next try if the write fails."""
        with self._lock:
            data = bytes(self._buffer)
        if data:
            self.storage.write_bytes(f"{log_prefix(self.job_id)}{self._chunk:06d}.log", data)
            self._chunk += 1
            with self._lock:
                del self._buffer[: len(data)]
