"""The `features` artifact format: per-clip frame features in Parquet shards, plus an index.

Files: `shards/shard-NNNNN.parquet` (one row per clip: video_id, clip_index, start, end, text, num_frames and
`features`, the float16 matrix [num_frames, dim] flattened row-major), `videos.parquet` (per video: duration and
feature count), `skipped.jsonl` (every input left out, with the reason) and `index.json`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlkd.errors import NotFoundError
from vlkd.storage import Storage

FORMAT = "vlkd.features/v1"
INDEX = "index.json"
VIDEOS = "videos.parquet"
SKIPPED = "skipped.jsonl"
SHARDS = "shards"

CLIP_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("clip_index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("num_frames", pa.int32()),
        ("features", pa.list_(pa.float16())),
    ]
)


@dataclass
class Clip:
    video_id: str
    clip_index: int
    start: float
    end: float
    text: str
    features: np.ndarray
    """float16 [num_frames, dim]"""


def clip_frames(start: float, end: float, fps: float, count: int) -> tuple[int, int] | None:
    """Feature rows [lo, hi) of a clip: the spans whose centre falls inside it. A clip shorter than one span
    gets the span holding its midpoint; a clip past the video's (truncated) features gets None."""
    lo = max(0, math.ceil(start * fps - 0.5))
    hi = min(count, math.ceil(end * fps - 0.5))
    if hi > lo:
        return lo, hi
    middle = math.floor((start + end) / 2 * fps)
    return (middle, middle + 1) if middle < count else None


def clips_table(clips: list[Clip]) -> pa.Table:
    flat = [c.features.astype(np.float16, copy=False).reshape(-1) for c in clips]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flat])]).astype(np.int32)
    values = np.concatenate(flat) if flat else np.zeros(0, np.float16)
    columns = {
        "video_id": [c.video_id for c in clips],
        "clip_index": [c.clip_index for c in clips],
        "start": [c.start for c in clips],
        "end": [c.end for c in clips],
        "text": [c.text for c in clips],
        "num_frames": [len(c.features) for c in clips],
        "features": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float16())),
    }
    return pa.table(columns, schema=CLIP_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_clips(data: bytes, dim: int) -> Iterator[Clip]:
    """Clips of one shard, features reshaped to [num_frames, dim]."""
    table = pq.read_table(io.BytesIO(data))
    columns = table.to_pydict()
    values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    offset = 0
    for i, frames in enumerate(columns["num_frames"]):
        size = frames * dim
        features = values[offset : offset + size].reshape(frames, dim)
        offset += size
        yield Clip(
            columns["video_id"][i],
            columns["clip_index"][i],
            columns["start"][i],
            columns["end"][i],
            columns["text"][i],
            features,
        )


class PartCache:
    """Finished per-video features of a run not yet published, kept in the store under a fingerprint of the
    inputs and settings, so a rerun (on any node) skips decoding what is done."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix

    def _key(self, video_id: str, tag: str) -> str:
        return f"{self.prefix}/parts/{video_id}.{tag}.npz"

    def has(self, video_id: str, tag: str) -> bool:
        return self.storage.exists(self._key(video_id, tag))

    def write(self, video_id: str, tag: str, features: np.ndarray, duration: float) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, features=features.astype(np.float16), duration=np.float64(duration))
        self.storage.write_bytes(self._key(video_id, tag), buffer.getvalue())

    def read(self, video_id: str, tag: str) -> tuple[np.ndarray, float]:
        try:
            data = np.load(io.BytesIO(self.storage.read_bytes(self._key(video_id, tag))))
        except NotFoundError:
            raise NotFoundError(f"features of {video_id} are missing from the run cache {self.prefix}") from None
        return data["features"], float(data["duration"])

    def clear(self) -> None:
        self.storage.delete_prefix(self.prefix)
