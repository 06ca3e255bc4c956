"""What a test needs from the machine (kubectl, the shared CRDs): skipped on a developer's machine that lacks it,
a failure in CI, where a skip would let a whole area go untested unnoticed."""

from __future__ import annotations

import os

import pytest


def require(present: bool, what: str) -> None:
    """Skip the test without `what`; under `CI=true` fail it instead, saying what is missing."""
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI lacks a prerequisite: {what}; .ci/run must provide it")
    pytest.skip(what)
