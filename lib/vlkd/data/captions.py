"""Caption segments in HowTo100M's layout: JSON Lines of `video_id, start, end, text`; a clip is one segment."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Caption:
    video_id: str
    start: float
    end: float
    text: str


def _parse_caption(line: str) -> Caption | str:
    """One caption line -> its Caption, or why it is none (not a record, an empty or negative segment, no text)."""
    try:
        record = json.loads(line)
        caption = Caption(str(record["video_id"]), float(record["start"]), float(record["end"]), str(record["text"]))
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a caption record ({type(exc).__name__}: {exc})"
    if not caption.end > caption.start >= 0:
        return f"segment [{caption.start}, {caption.end}] is empty or negative"
    if not caption.text.strip():
        return "empty caption text"
    return caption


def read_captions(lines: Iterable[str]) -> Iterator[tuple[int, Caption | str]]:
    """`(line number, its Caption or why it is none)` of each non-blank line, streamed: a file of HowTo100M's 136M
    captions is read a line at a time."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, _parse_caption(line)


def parse_captions(lines: Iterable[str]) -> tuple[list[Caption], list[tuple[int, str]]]:
    """Parse caption lines; a bad line is reported as `(line number, reason)` instead of failing the file,
    so one malformed caption never costs the dataset."""
    captions: list[Caption] = []
    problems: list[tuple[int, str]] = []
    for number, parsed in read_captions(lines):
        if isinstance(parsed, Caption):
            captions.append(parsed)
        else:
            problems.append((number, parsed))
    return captions, problems


def dump_captions(captions: Iterable[Caption]) -> str:
    return "".join(json.dumps(asdict(c)) + "\n" for c in captions)
