"""A job's log holds what its user reads: Ray Data, as jobs configure it, writes no progress blocks into it (they
were two thirds of a teacher's log), nor its INFO lines about each execution (half of what was left), while its
warnings still reach it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

# A job's log is its driver's stdout and stderr, neither a terminal: a process of its own, as a job's driver is (in
# the test's process, Ray's console handler keeps the stream pytest's capture had when Ray Data was first imported).
DRIVER = """
import logging, sys
import ray, ray.data
from ray.data._internal.logging import get_log_directory
from vlkd.data.ingest import configure_ray_data
from vlkd.specs import Resources

ray.init(address=sys.argv[1], log_to_driver=False)
configure_ray_data(Resources())
first = iter(ray.data.range(4).iter_batches(batch_size=1))
next(first)  # an execution still running while the next starts: "registers for logging while another dataset ..."
assert len(ray.data.range(3).take_all()) == 3
assert len(list(first)) == 3
logging.getLogger("ray.data._internal.execution").warning("a warning of Ray Data's")
print("ray data logs:", get_log_directory())
"""


@pytest.fixture(scope="module")
def driver_output(ray_session) -> tuple[str, Path]:
    """(what a driver running two Ray Data pipelines, as jobs configure them, wrote; Ray Data's own log folder)."""
    import ray

    address = ray.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, "-c", DRIVER, address], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = done.stdout.split("ray data logs: ", 1)[1].strip()
    return done.stdout + done.stderr, Path(folder)


def test_a_ray_data_pipeline_as_jobs_configure_it_writes_no_progress_to_the_log(driver_output):
    log, _ = driver_output
    assert "Running Dataset" not in log and "Total Progress" not in log, log


def test_ray_datas_info_lines_stay_in_its_own_log_and_its_warnings_reach_the_jobs(driver_output):
    """Four INFO lines an execution (start, plan, end, another dataset logging meanwhile) went to the console, once
    for every validation and every pass over a split; Ray Data's own log file keeps them."""
    log, folder = driver_output
    assert "a warning of Ray Data's" in log
    assert "Starting execution" not in log and "execution finished" not in log, log
    assert "registers for logging" not in log, log
    kept = "".join(f.read_text() for f in folder.glob("*.log"))
    assert "Starting execution" in kept and "registers for logging" in kept
