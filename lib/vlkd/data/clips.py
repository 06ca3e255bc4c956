"""Reading a `features` artifact for training: (caption, frame features) pairs as Ray Data datasets.

The held-out split is made of whole videos (chosen by a seeded hash of the video id), so no clip of a
validation video is seen in training: retrieval on it measures grounding, not memorised videos.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vlkd.artifacts import ArtifactStore
from vlkd.data import features as fmt
from vlkd.errors import DataError
from vlkd.inputs import InputSource, open_input
from vlkd.refs import ArtifactRef


@dataclass(frozen=True)
class FeaturesInfo:
    ref: ArtifactRef
    feature_dim: int
    dim_2d: int
    shards: tuple[str, ...]
    videos: tuple[tuple[str, int], ...]
    """(video id, clips)"""


def features_info(source: InputSource) -> FeaturesInfo:
    import pyarrow.parquet as pq

    index = json.loads(source.read_bytes(fmt.INDEX))
    if index.get("format") != fmt.FORMAT:
        raise DataError(f"{source.uri} is not a features artifact of format {fmt.FORMAT}: rerun preprocess")
    table = pq.read_table(io.BytesIO(source.read_bytes(fmt.VIDEOS)))
    videos = tuple(zip(table.column("video_id").to_pylist(), table.column("clips").to_pylist(), strict=True))
    shards = tuple(s["path"] for s in index["shards"])
    return FeaturesInfo(source.ref, index["feature_dim"], index["dim_2d"], shards, videos)


def validation_videos(videos: tuple[tuple[str, int], ...], val_clips: int, seed: int) -> frozenset[str]:
    """Whole videos, in seeded-hash order, until they hold at least `val_clips` clips."""
    if val_clips == 0:
        return frozenset()
    total = sum(c for _, c in videos)
    if val_clips >= total:
        raise DataError(f"val_size={val_clips} would hold out all {total} clips: set train.val_size below {total}")
    order = sorted(videos, key=lambda v: hashlib.sha256(f"{seed}:{v[0]}".encode()).hexdigest())
    chosen, count = set(), 0
    for video_id, clips in order:
        if count >= val_clips:
            break
        chosen.add(video_id)
        count += clips
    return frozenset(chosen)


def _shard_rows(
    row: dict[str, Any],
    source: InputSource,
    dim: int,
    keep: frozenset[str],
    inside: bool,
    columns: slice,
    max_frames: int,
) -> list[dict[str, Any]]:
    rows = []
    for clip in fmt.read_clips(source.read_bytes(row["path"]), dim):
        if (clip.video_id in keep) == inside:
            rows.append({"text": clip.text, "features": np.ascontiguousarray(clip.features[:max_frames, columns])})
    return rows


def clip_datasets(
    store: ArtifactStore, ref: ArtifactRef | str, val_size: int, seed: int, middle_frame_only: bool, max_frames: int
) -> tuple[dict[str, Any], FeaturesInfo]:
    """Ray Data datasets {"train", "validation"} of rows {text, features [T, F] float16}.

    `middle_frame_only` keeps the middle frame's 2D feature (image-level supervision, Table 6)."""
    import ray

    # Rows in shard order, so a seeded run sees the same batches every time (Ray Data may reorder otherwise).
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    source = open_input(str(ref), store)
    info = features_info(source)
    held_out = validation_videos(info.videos, val_size, seed)
    columns = slice(0, info.dim_2d) if middle_frame_only else slice(None)
    shards = [{"path": p} for p in info.shards]

    def split(inside: bool) -> Any:
        read = partial(
            _shard_rows,
            source=source,
            dim=info.feature_dim,
            keep=held_out,
            inside=inside,
            columns=columns,
            max_frames=max_frames,
        )
        return ray.data.from_items(shards).flat_map(read)

    datasets = {"train": split(False), "validation": split(True)}
    return datasets, info


def middle_frames(features: np.ndarray) -> np.ndarray:
    """[T, F] -> [1, F]: the middle frame only."""
    return features[len(features) // 2 : len(features) // 2 + 1]


def pad_features(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length [T_i, F] -> padded [B, T, F] float32 and mask [B, T] bool."""
    longest = max(len(x) for x in items)
    batch = np.zeros((len(items), longest, items[0].shape[1]), np.float32)
    mask = np.zeros((len(items), longest), bool)
    for i, x in enumerate(items):
        batch[i, : len(x)] = x
        mask[i, : len(x)] = True
    return batch, mask
