"""A job's log holds what its user reads: Ray Data, as jobs configure it, writes no progress blocks into it (they
were two thirds of a teacher's log)."""

from __future__ import annotations

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
