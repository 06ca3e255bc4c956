"""How many times each S3 request, body read and download part is tried in this process: a job's patience, or a
person's at a terminal (`interactive`), which a long-running command gives back to a job's (`patient`). S3 storage
reads `S3_MAX_ATTEMPTS` whenever it makes a client or reads a body, so the count in force then is the one used."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

# Attempts of every S3 request (pyarrow's for checkpoints too), of every read of an object's body and of every
# download's part: a multi-day run meets S3's transient 503 SlowDown and reset connections, and one of them must not
# end it. Requests use botocore's "standard" retry mode: exponential backoff with full jitter (in botocore 1.44 from
# 1 s for throttling such as SlowDown and from 50 ms for other transient errors, doubling, at most 20 s) and a retry
# quota per client that stops retrying once an endpoint is down for good. Not "adaptive": it adds a client-side rate
# limiter that holds back every request of a client after a throttle, but each Ray worker has its own client, so it
# cannot pace the cluster; the AWS SDKs' reference guide recommends standard and keeps adaptive for special cases.
JOB_S3_MAX_ATTEMPTS = 10
S3_MAX_ATTEMPTS = JOB_S3_MAX_ATTEMPTS
"""this process's attempts now (`interactive`, `patient`)"""
# A person at a terminal waits for every attempt's backoff: ten attempts at an endpoint where nothing listens took
# 9.5-15 s before the error. The CLI (`interactive`) makes 3, the AWS CLI's default in standard mode; the jobs it
# submits run in processes of their own (a local job's subprocess, a Ray driver, a pod) and keep 10.
INTERACTIVE_S3_MAX_ATTEMPTS = 3
# Backoff between attempts to read a body: full jitter over BASE * 2**(attempt - 1) seconds, at most MAX, as
# botocore waits between attempts of a request that failed for a reason other than throttling.
BODY_RETRY_BASE_SECONDS = 0.05
BODY_RETRY_MAX_SECONDS = 20.0


@contextlib.contextmanager
def _attempts(count: int) -> Iterator[None]:
    """`S3_MAX_ATTEMPTS` is `count` while it lasts, and what it was after."""
    global S3_MAX_ATTEMPTS
    before, S3_MAX_ATTEMPTS = S3_MAX_ATTEMPTS, count
    try:
        yield
    finally:
        S3_MAX_ATTEMPTS = before


def interactive() -> contextlib.AbstractContextManager[None]:
    """While it lasts, this process answers a person at a terminal: S3 requests, body reads and downloads get
    `INTERACTIVE_S3_MAX_ATTEMPTS`, so a mistyped endpoint or a stopped server fails in about a second. Given back
    after, for a process that goes on to other work (a test, a notebook calling the CLI's `main`)."""
    return _attempts(min(S3_MAX_ATTEMPTS, INTERACTIVE_S3_MAX_ATTEMPTS))


def patient() -> contextlib.AbstractContextManager[None]:
    """Inside `interactive`, a command that drives jobs for hours or days (`vlkd pipeline run`, the quickstart) gets
    a job's attempts again: a network blip of a few seconds as a stage ends must not stop the pipeline."""
    return _attempts(JOB_S3_MAX_ATTEMPTS)


def body_backoff(attempt: int) -> float:
    """Seconds to wait before attempt `attempt` (from 1, the first retry) to read an object's body."""
    return random.uniform(0, min(BODY_RETRY_MAX_SECONDS, BODY_RETRY_BASE_SECONDS * 2 ** (attempt - 1)))
