"""A test whose prerequisite is missing skips on a developer's machine and fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "1 skipped")])
def test_a_missing_prerequisite_fails_in_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    probe = tmp_path / "test_probe.py"
    probe.write_text("from prerequisites import require\n\n\ndef test_it():\n    require(False, 'no frobnicator')\n")
    # PYTEST_ADDOPTS emptied: the probe prints its summary line whatever options the suite itself was given
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(TESTS), "PYTEST_ADDOPTS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert outcome in result.stdout, result.stdout
    if ci:
        assert "CI lacks a prerequisite: no frobnicator" in result.stdout
