"""Requests kept in flight while the driver works (`vlkd.overlap`): in order, bounded, failures not lost."""

from __future__ import annotations

import threading
import time

import pytest

from vlkd.overlap import BackgroundCalls, read_ahead

pytestmark = pytest.mark.timeout(60)


class Gauge:
    """How many calls run at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_reads_run_together_and_come_back_in_order():
    gauge = Gauge()
    started = threading.Barrier(8, timeout=10)  # passes only if eight reads run at once

    def read(item: int) -> int:
        with gauge:
            if item < 8:
                started.wait()
            time.sleep(0.001 * (item % 3))  # later items may finish first
            return item * item

    results = list(read_ahead(range(40), read, 8, float("inf"), lambda _: 1))

    assert results == [(i, i * i) for i in range(40)]
    assert gauge.most == 8


def test_what_is_read_ahead_stops_at_the_budget():
    gauge = Gauge()
    held = []

    def read(item: int) -> int:
        with gauge:
            time.sleep(0.002)
            return item

    for item, _ in read_ahead(range(30), read, 16, 10, lambda _: 4):
        held.append(item)

    assert held == list(range(30))
    assert gauge.most <= 3  # 4 + 4 is under 10, a third crosses it, none more


def test_a_failed_read_is_raised_in_its_turn_after_the_reads_before_it():
    def read(item: int) -> int:
        if item == 5:
            raise OSError("the store refused part 5")
        return item

    seen = []
    with pytest.raises(OSError, match="refused part 5"):
        for item, _ in read_ahead(range(20), read, 4, float("inf"), lambda _: 1):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_leaves_no_read_running():
    gauge = Gauge()

    def read(item: int) -> int:
        with gauge:
            time.sleep(0.01)
            return item

    reads = read_ahead(range(1000), read, 8, float("inf"), lambda _: 1)
    next(reads)
    reads.close()
    assert gauge.now == 0


def test_background_calls_keep_at_most_the_limit_in_flight_and_raise_the_first_failure():
    gauge = Gauge()
    done = []

    def call(number: int) -> None:
        with gauge:
            time.sleep(0.005)
            if number == 7:
                raise OSError("upload 7 failed")
            done.append(number)

    calls = BackgroundCalls(threads=3, limit=3)
    with pytest.raises(OSError, match="upload 7 failed"):
        for number in range(12):
            calls.submit(lambda number=number: call(number))
        calls.close()
    calls.stop()
    assert gauge.most == 3
    assert set(range(7)) <= set(done)


def test_stopped_background_calls_drop_what_has_not_started():
    release = threading.Event()
    ran = []
    calls = BackgroundCalls(threads=1, limit=10)
    calls.submit(lambda: release.wait(10))
    for number in range(5):
        calls.submit(lambda number=number: ran.append(number))
    threading.Timer(0.05, release.set).start()
    calls.stop()
    assert ran == []
