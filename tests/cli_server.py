"""A process that has imported the `vlkd` command once and forks a child for each run of it (`vlkd_cli` in
conftest.py): what `python -m vlkd.cli.main ARGS` does, less the half CPU-second of imports each of the suite's
~260 commands paid. The child is still a process of its own, with the run's environment, directory, stdin, stdout
and stderr, and exits with the command's status, so a test sees what a user's shell sees.

Protocol, a JSON line each way on stdin/stdout: {"args", "env", "cwd", "stdout", "stderr"} in (paths of files for
the child's output), the child's pid out; when a child ends, its wait status goes to the file `<stdout>.status`.
The server itself runs no threads (a fork copies only the forking thread)."""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import threading
from pathlib import Path

# What most commands import on the way: the command line itself, the stores (boto3 for S3), specs and job records.
# Nothing that reads the environment when imported: each child has its own.
import boto3  # noqa: F401
import botocore.session  # noqa: F401
import yaml  # noqa: F401

import vlkd.artifacts
import vlkd.backends.submission
import vlkd.cli.main
import vlkd.specs

STATUS_FILES: dict[int, Path] = {}


def _reap(*_: object) -> None:
    """Record each ended child's wait status where its test looks for it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        path = STATUS_FILES.pop(pid, None)
        if path is not None:
            path.with_suffix(".part").write_text(str(status))
            path.with_suffix(".part").rename(path)


def _run(request: dict) -> None:
    """In the child: become `python -m vlkd.cli.main ARGS` as `subprocess.run` would start it, and run it."""
    # The command's own subprocesses are waited for as usual (a blocked or caught SIGCHLD would be inherited).
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY), (2, request["stderr"], os.O_WRONLY))
    for fd, path, mode in streams:
        opened = os.open(path, mode)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = [vlkd.cli.main.__file__, *request["args"]]
    # click names the program from __main__'s package, as `python -m` sets it: "Usage: python -m vlkd.cli.main"
    sys.modules["__main__"].__package__ = vlkd.cli.main.__package__
    try:
        vlkd.cli.main.main()  # ends in SystemExit, as the command does
        code = 0
    except SystemExit as exit:
        code = exit.code
    except BaseException:  # as Python reports an uncaught exception (`vlkd -v` lets a library's error through)
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    # Python's own exit, less the teardown of every module and object the server imported (a tenth of a
    # CPU-second: each object it frees is a page copied from the server): its threads, atexit functions, streams.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def serve() -> None:
    signal.signal(signal.SIGCHLD, _reap)
    gc.freeze()  # what the server imported is never collected: a child's collections leave its pages shared
    for line in sys.stdin:
        request = json.loads(line)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # reaped only once its status file is known
        pid = os.fork()
        if pid == 0:
            _run(request)
        STATUS_FILES[pid] = Path(request["stdout"] + ".status")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
