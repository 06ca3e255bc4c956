"""A captions file grouped by video without holding it. HowTo100M's release has 136M captions (tens of GB as Python
objects): `preprocess` counts them per video in one pass, appends each to the local file of its range of video ids in
a second, and then reads one range at a time, in video id order, to cut the clips."""

from __future__ import annotations

import bisect
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vlkd.data.captions import Caption, read_captions

RANGE_CAPTIONS = 250_000
"""captions a range holds at most, about 100 MB as `Caption`s (a video with more is a range of its own)"""

SPILL_BYTES = 32 << 20
"""caption lines held for all ranges together before they are appended to the ranges' files: one file open at a
time, whatever the number of ranges (HowTo100M makes over 500)"""


def count_captions(lines: Iterable[str], problem: Callable[[int, str], None]) -> dict[str, int]:
    """Usable captions per video id; each line that is none goes to `problem(line number, why)`."""
    counts: dict[str, int] = {}
    for number, parsed in read_captions(lines):
        if isinstance(parsed, Caption):
            counts[parsed.video_id] = counts.get(parsed.video_id, 0) + 1
        else:
            problem(number, parsed)
    return counts


@dataclass(frozen=True)
class CaptionRanges:
    """The captions of some videos, in local files of consecutive video ids, each holding at most `RANGE_CAPTIONS`."""

    folder: Path
    firsts: tuple[str, ...]
    """the first video id of each range, in order"""

    @classmethod
    def spill(
        cls, lines: Iterable[str], counts: dict[str, int], folder: Path, limit: int = RANGE_CAPTIONS
    ) -> CaptionRanges:
        """The captions in `lines` of the videos in `counts` (their caption counts, `count_captions`), each
        appended to its range's file in `folder` (emptied first) in the order read."""
        firsts: list[str] = []
        held = 0
        for video_id in sorted(counts):
            if not firsts or held + counts[video_id] > limit:
                firsts.append(video_id)
                held = 0
            held += counts[video_id]
        ranges = cls(folder, tuple(firsts))
        shutil.rmtree(folder, ignore_errors=True)  # appended to: an earlier run's files must not be
        folder.mkdir(parents=True)
        pending: dict[int, list[str]] = {}
        size = 0
        for _, caption in read_captions(lines):
            if isinstance(caption, Caption) and caption.video_id in counts:
                line = json.dumps([caption.video_id, caption.start, caption.end, caption.text]) + "\n"
                pending.setdefault(bisect.bisect_right(ranges.firsts, caption.video_id) - 1, []).append(line)
                size += len(line)
                if size >= SPILL_BYTES:
                    ranges._append(pending)
                    pending, size = {}, 0
        ranges._append(pending)
        return ranges

    def _file(self, index: int) -> Path:
        return self.folder / f"range-{index:06d}.jsonl"

    def _append(self, pending: dict[int, list[str]]) -> None:
        for index, lines in pending.items():
            with self._file(index).open("a", encoding="utf-8") as file:
                file.writelines(lines)

    def videos(self) -> Iterator[tuple[str, list[Caption]]]:
        """Each video and its captions in the order the captions file gives them, by video id, one range in
        memory at a time."""
        for index in range(len(self.firsts)):
            grouped: dict[str, list[Caption]] = {}
            with self._file(index).open(encoding="utf-8") as file:
                for line in file:
                    caption = Caption(*json.loads(line))
                    grouped.setdefault(caption.video_id, []).append(caption)
            yield from sorted(grouped.items())
