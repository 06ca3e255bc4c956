"""What each worker process of a job's embedded Ray (`vlkd.runtime.start_local_ray`) does as it starts: Ray runs
`setup_worker` there (`runtime_env.worker_process_setup_hook`) before the worker's first task or actor, its own
helpers' included. Standard library only: every worker imports this, Ray Data's and Ray Train's helpers too.

Ray Train starts a detached `PlacementGroupCleaner` beside each training run, which asks Ray's state API once a
second whether the run's controller still lives (ray/train/v2/_internal/execution/controller/
placement_group_cleaner.py, `_monitor_loop`). The state API is served by the dashboard, which the embedded Ray goes
without (0.9 GB of memory on a laptop), so every ask fails: a warning a second in the job's log for as long as it
trains, or, with another Ray on the machine (two local jobs at once), a 30-line traceback as the cleaner's thread
dies of not knowing which to ask. The cleaner has nothing to do there either: the embedded Ray, its placement groups
with it, ends with the job's driver. On a cluster, which has a dashboard, it is left alone.

Ray Train also starts a `PreemptionWatcher` actor with each worker group, which polls for the drains that announce a
node's preemption (ray/train/v2/_internal/callbacks/preemption_callback.py). One machine's Ray is never drained, and
Ray logged an error line for every watcher it started (`has constructor arguments in the object store and
max_restarts > 0`, ray-project/ray#53727): `worker_env` turns it off there, unless the user set the switch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
PG_CLEANER_THREAD = "PlacementGroupCleanerMonitor"
PREEMPTION_WATCHER_SWITCH = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # ray/train/v2/_internal/constants.py


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables the embedded Ray's workers get beside the driver's (`environ`): Ray Train's
    preemption watcher off, unless `environ` sets it."""
    return {} if PREEMPTION_WATCHER_SWITCH in environ else {PREEMPTION_WATCHER_SWITCH: "0"}


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
