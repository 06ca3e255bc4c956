"""A job's log holds what its user reads: Ray Data, as jobs configure it, writes no progress blocks into it (they
were two thirds of a teacher's log), nor its INFO lines about each execution (half of what was left), while its
warnings still reach it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vlkd.data.ingest import configure_ray_data
from vlkd.specs import Resources

pytestmark = pytest.mark.timeout(300)


def test_a_ray_data_pipeline_as_jobs_configure_it_writes_no_progress_to_the_log(ray_session, capfd):
    """A job's log is its driver's stdout and stderr, neither a terminal: where Ray Data logs its progress blocks."""
    import ray.data

    configure_ray_data(Resources())
    assert [row["id"] for row in ray.data.range(4).take_all()] == [0, 1, 2, 3]

    out, err = capfd.readouterr()
    log = out + err
    assert "Running Dataset" not in log and "Total Progress" not in log, log


def test_ray_datas_info_lines_stay_in_its_own_log_and_its_warnings_reach_the_jobs(ray_session, capfd):
    """Four INFO lines an execution (start, plan, end, another dataset logging meanwhile) went to the console, once
    for every validation and every pass over a split; Ray Data's own log file keeps them."""
    import ray.data
    from ray.data._internal.logging import get_log_directory

    configure_ray_data(Resources())
    first = iter(ray.data.range(4).iter_batches(batch_size=1))
    next(first)  # an execution still running while the next one starts: "registers for logging while another ..."
    assert len(ray.data.range(3).take_all()) == 3
    assert len(list(first)) == 3
    logging.getLogger("ray.data._internal.execution").warning("a warning of Ray Data's")

    out, err = capfd.readouterr()
    log = out + err
    assert "a warning of Ray Data's" in log
    assert "Starting execution" not in log and "execution finished" not in log, log
    assert "registers for logging" not in log, log
    files = Path(get_log_directory()).glob("*.log")
    assert any("Starting execution" in f.read_text() for f in files)  # kept where Ray Data keeps its full logs
