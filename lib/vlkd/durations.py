"""Durations as a person reads them, the same in a job's log and in the CLI's progress lines."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """`H:MM:SS`, and the days before it past one (`400d 15:34:08`): an ETA must not wrap every 24 hours."""
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    return f"{days}d {hour:02d}:{minute:02d}:{second:02d}" if days else f"{hour}:{minute:02d}:{second:02d}"
