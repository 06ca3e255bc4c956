"""The inputs a `preprocess` run leaves out, with why: every one goes to the features artifact's `skipped.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO


class SkippedInputs:
    """Appended to a local JSON Lines file as they come, not held: a noisy captions file skips a line per bad
    caption, and short videos a clip per caption past their end, millions at HowTo100M's size. The first `FIRST`
    are kept for the manifest, and the first `REASONS` distinct reasons for the error when nothing is usable."""

    FIRST = 100
    REASONS = 5

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.first: list[dict[str, str]] = []
        self.reasons: list[str] = []
        self._file: TextIO = path.open("w", encoding="utf-8")

    def add(self, item: str, reason: str) -> None:
        entry = {"item": item, "reason": reason}
        self._file.write(json.dumps(entry) + "\n")
        self.count += 1
        if len(self.first) < self.FIRST:
            self.first.append(entry)
        if len(self.reasons) < self.REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def close(self) -> Path:
        """The file, complete."""
        self._file.close()
        return self.path
