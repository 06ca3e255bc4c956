"""What each worker process of a job's embedded Ray (`vlkd.runtime.start_local_ray`) does as it starts: Ray runs
`setup_worker` there (`runtime_env.worker_process_setup_hook`) before the worker's first task or actor, its own
helpers' included. Standard library only: every worker imports this, Ray Data's and Ray Train's helpers too.

Ray Train starts a detached `PlacementGroupCleaner` beside each training run, which asks Ray's state API once a
second whether the run's controller still lives (ray/train/v2/_internal/execution/controller/
placement_group_cleaner.py, `_monitor_loop`). The state API is served by the dashboard, which the embedded Ray goes
without (0.9 GB of memory on a laptop), so every ask fails: a warning a second in the job's log for as long as it
trains, or, with another Ray on the machine (two local jobs at once), a 30-line traceback as the cleaner's thread
dies of not knowing which to ask. The cleaner has nothing to do there either: the embedded Ray, its placement groups
with it, ends with the job's driver. On a cluster, which has a dashboard, it is left alone."""

from __future__ import annotations

import logging
import threading

PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
PG_CLEANER_THREAD = "PlacementGroupCleanerMonitor"


def setup_worker() -> None:
    """Silence Ray Train's placement-group cleaner, and only it: its warnings (its errors still show), and the
    death of its monitoring thread. Any other thread's uncaught exception is reported as before."""
    logging.getLogger(PG_CLEANER_LOGGER).setLevel(logging.ERROR)
    report = threading.excepthook

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and args.thread.name == PG_CLEANER_THREAD:
            logging.getLogger(PG_CLEANER_LOGGER).debug("its monitor stopped: %s", args.exc_value)
            return
        report(args)

    threading.excepthook = excepthook
