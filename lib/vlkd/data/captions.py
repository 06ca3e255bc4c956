"""Caption segments in HowTo100M's layout: JSON Lines of `video_id, start, end, text`; a clip is one segment."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Caption:
    video_id: str
    start: float
    end: float
    text: str


def parse_captions(lines: Iterable[str]) -> tuple[list[Caption], list[tuple[int, str]]]:
    """Parse caption lines; a bad line is reported as `(line number, reason)` instead of failing the file,
    so one malformed caption never costs the dataset."""
    captions: list[Caption] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            caption = Caption(
                str(record["video_id"]), float(record["start"]), float(record["end"]), str(record["text"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            problems.append((number, f"not a caption record ({type(exc).__name__}: {exc})"))
            continue
        if not caption.end > caption.start >= 0:
            problems.append((number, f"segment [{caption.start}, {caption.end}] is empty or negative"))
        elif not caption.text.strip():
            problems.append((number, "empty caption text"))
        else:
            captions.append(caption)
    return captions, problems


def dump_captions(captions: Iterable[Caption]) -> str:
    return "".join(json.dumps(asdict(c)) + "\n" for c in captions)
