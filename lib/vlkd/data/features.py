"""The `features` artifact format: per-clip frame features in Parquet shards, plus an index.

Files: `shards/shard-NNNNN.parquet` (one row per clip: video_id, clip_index, start, end, text, num_frames and
`features`, the float16 matrix [num_frames, dim] row-major, little-endian, as bytes), `videos.parquet` (per video:
duration and feature count), `skipped.jsonl` (every input left out, with the reason) and `index.json`.

Format v2 stores `features` as binary: Parquet decodes a clip's bytes in one copy, where v1's list<float16> cost
a repetition level per value and read ten times slower (`bench/input_path.py`). v1 artifacts are still read.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlkd.errors import NotFoundError
from vlkd.overlap import BackgroundCalls
from vlkd.storage import Storage

FORMAT = "vlkd.features/v2"
READABLE_FORMATS = ("vlkd.features/v1", FORMAT)
INDEX = "index.json"
VIDEOS = "videos.parquet"
SKIPPED = "skipped.jsonl"
SHARDS = "shards"
READ_ROWS = 32
"""clips per Parquet row group of a shard, and per batch its readers decode"""

CLIP_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("clip_index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("num_frames", pa.int32()),
        ("features", pa.binary()),
    ]
)


VIDEO_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("duration", pa.float64()), ("frames", pa.int64()), ("clips", pa.int64())]
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
    gets the span holding its midpoint; a clip past the end of the video's features gets None."""
    lo = max(0, math.ceil(start * fps - 0.5))
    hi = min(count, math.ceil(end * fps - 0.5))
    if hi > lo:
        return lo, hi
    middle = math.floor((start + end) / 2 * fps)
    return (middle, middle + 1) if middle < count else None


def clips_table(clips: list[Clip]) -> pa.Table:
    flat = [np.ascontiguousarray(c.features, np.float16).reshape(-1) for c in clips]
    values = np.concatenate(flat) if flat else np.zeros(0, np.float16)
    offsets = np.concatenate([[0], np.cumsum([f.nbytes for f in flat])]).astype(np.int32)
    features = pa.Array.from_buffers(pa.binary(), len(clips), [None, pa.py_buffer(offsets), pa.py_buffer(values)])
    columns = {
        "video_id": [c.video_id for c in clips],
        "clip_index": [c.clip_index for c in clips],
        "start": [c.start for c in clips],
        "end": [c.end for c in clips],
        "text": [c.text for c in clips],
        "num_frames": [len(c.features) for c in clips],
        "features": features,
    }
    return pa.table(columns, schema=CLIP_SCHEMA)


def flat_features(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A `features` column's values, every clip's frames one after another: float16 [sum(num_frames) * dim]."""
    if isinstance(column, pa.ChunkedArray):  # one chunk is read in place: combining would copy it
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if pa.types.is_list(column.type):  # format v1
        return column.flatten().to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + len(column) + 1]
    return np.frombuffer(column.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].view("<f2")


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    return sink.getvalue()


def read_clips(data: bytes, dim: int) -> Iterator[Clip]:
    """Clips of one shard, features reshaped to [num_frames, dim]; decoded `READ_ROWS` clips at a time, so a reader
    holds the shard's bytes and a few clips, not the decoded shard."""
    for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=READ_ROWS):
        columns = batch.drop_columns(["features"]).to_pydict()  # features stay one numpy array, not Python floats
        values = flat_features(batch.column("features"))
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


class FeaturesWriter:
    """Writes a `features` artifact's files into `put(path, local file)` (a draft's `add_file`, or a copy into a
    folder): videos in order, their clips in shards of `shard_size`, then `videos.parquet`, `skipped.jsonl` and the
    index. Memory holds one pending shard, `UPLOADS` shards going up and a batch of video rows, however many videos
    there are. Shards go up in background threads while the next is cut (`close` waits for them); use as a context
    manager, so that a failure stops the uploads before the draft is aborted."""

    _VIDEO_ROWS = 4096
    UPLOADS = 4

    def __init__(
        self,
        put: Callable[[str, Path], Any],
        scratch: Path,
        shard_size: int,
        dims: tuple[int, int],
        fps: float,
        max_frames: int,
    ) -> None:
        self.put = put
        self.scratch = scratch
        self.shard_size = shard_size
        self.index: dict[str, Any] = {
            "format": FORMAT,
            "feature_dim": sum(dims),
            "dim_2d": dims[0],
            "dim_3d": dims[1],
            "fps": fps,
            "max_frames": max_frames,
            "shards": [],
        }
        self.counts = {"videos": 0, "clips": 0, "frames": 0}
        self._pending: list[Clip] = []
        self._rows: list[dict[str, Any]] = []
        self._videos: pq.ParquetWriter | None = None
        self._uploads = BackgroundCalls(self.UPLOADS, self.UPLOADS)

    def __enter__(self) -> FeaturesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._uploads.stop()

    def add_video(self, video_id: str, duration: float, frames: int, clips: list[Clip]) -> None:
        self._rows.append({"video_id": video_id, "duration": duration, "frames": frames, "clips": len(clips)})
        for key, value in (("videos", 1), ("clips", len(clips)), ("frames", frames)):
            self.counts[key] += value
        if len(self._rows) >= self._VIDEO_ROWS:
            self._write_rows()
        self._pending.extend(clips)
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _write_rows(self) -> None:
        table = pa.Table.from_pylist(self._rows, schema=VIDEO_SCHEMA)
        if self._videos is None:
            self._videos = pq.ParquetWriter(self.scratch / VIDEOS, VIDEO_SCHEMA, compression="zstd")
        self._videos.write_table(table)
        self._rows = []

    def _put(self, path: str, data: bytes) -> None:
        local = self.scratch / path.replace("/", "-")
        local.write_bytes(data)
        self.put(path, local)
        local.unlink(missing_ok=True)  # `put` may have moved it

    def _flush(self) -> None:
        path = f"{SHARDS}/shard-{len(self.index['shards']):05d}.parquet"
        self._uploads.submit(partial(self._put, path, parquet_bytes(clips_table(self._pending), READ_ROWS)))
        self.index["shards"].append({"path": path, "clips": len(self._pending)})
        self._pending = []

    def close(self, skipped: Path | None = None) -> dict[str, Any]:
        """Write the last shard and the tables; return the index. `skipped` is the local JSON Lines file of the
        inputs left out (`vlkd.data.skipped`), none when omitted."""
        if self._pending:
            self._flush()
        self._uploads.close()
        self._write_rows()
        self._videos.close()
        self.put(VIDEOS, self.scratch / VIDEOS)
        if skipped is None:
            self._put(SKIPPED, b"")
        else:
            self.put(SKIPPED, skipped)
        self._put(INDEX, json.dumps(self.index, indent=2).encode())
        return self.index


class PartCache:
    """Finished spans of per-video features of a run not yet published, kept in the store under a fingerprint of
    the inputs and settings, so a rerun (on any node) skips decoding what is done.

    Layout under `prefix/parts/`: `<video>.<tag>.<span>.npy` (float16 [n, dim]) per span, and
    `<video>.<tag>.end-<spans>.json` ({duration}) once its decoder has reached the end. Spans and end are written in
    parallel, in any order, so a video is complete only when its end record and every span it names are there."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix

    def _part(self, video_id: str, tag: str, span: int) -> str:
        return f"{self.prefix}/parts/{video_id}.{tag}.{span:05d}.npy"

    def _end(self, video_id: str, tag: str, spans: int) -> str:
        return f"{self.prefix}/parts/{video_id}.{tag}.end-{spans}.json"

    def write_span(self, video_id: str, tag: str, span: int, features: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, features.astype(np.float16))
        self.storage.write_bytes(self._part(video_id, tag, span), buffer.getvalue())

    def write_end(self, video_id: str, tag: str, spans: int, duration: float) -> None:
        self.storage.write_bytes(self._end(video_id, tag, spans), json.dumps({"duration": duration}).encode())

    def completed(self) -> dict[tuple[str, str], int]:
        """(video id, tag) -> spans, for every video whose spans are all cached (one listing of the cache). Held
        per video, its parts as the bits of an int, not per part: HowTo100M's 1.2M videos make about 16M parts."""
        seen: dict[tuple[str, str], list[int]] = {}  # (video, tag) -> [its parts' bits, spans of its end or -1]
        for info in self.storage.list(f"{self.prefix}/parts"):
            name = info.key[len(self.prefix) + len("/parts/") :]
            video_id, tag, what, _ = name.rsplit(".", 3)
            parts = seen.setdefault((video_id, tag), [0, -1])
            if what.startswith("end-"):
                parts[1] = int(what.removeprefix("end-"))
            else:
                parts[0] |= 1 << int(what)
        return {
            video: end for video, (bits, end) in seen.items() if end >= 0 and bits & ((1 << end) - 1) == (1 << end) - 1
        }

    def read(self, video_id: str, tag: str, spans: int) -> tuple[np.ndarray, float]:
        """A complete video's features [T, dim] and duration."""
        try:
            duration = json.loads(self.storage.read_bytes(self._end(video_id, tag, spans)))["duration"]
            parts = [np.load(io.BytesIO(self.storage.read_bytes(self._part(video_id, tag, s)))) for s in range(spans)]
        except NotFoundError:
            raise NotFoundError(f"features of {video_id} are missing from the run cache {self.prefix}") from None
        return np.concatenate(parts), float(duration)

    def clear(self) -> None:
        self.storage.delete_prefix(self.prefix)
