"""Reading a `features` artifact for training: (caption, frame features) pairs as Ray Data datasets.

The held-out split is made of whole videos (chosen by a seeded hash of the video id), so no clip of a
validation video is seen in training: retrieval on it measures grounding, not memorised videos.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import json
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from vlkd.artifacts import ArtifactStore
from vlkd.data import features as fmt
from vlkd.data.buckets import FRAMES, padded_length
from vlkd.data.ingest import SplitReader, passes_for
from vlkd.data.row_groups import read_row_groups, shard_files
from vlkd.errors import DataError
from vlkd.inputs import InputFile, InputSource, open_input
from vlkd.refs import ArtifactRef
from vlkd.specs import Resources


@dataclass(frozen=True)
class FeaturesInfo:
    ref: ArtifactRef
    feature_dim: int
    dim_2d: int
    shards: tuple[str, ...]
    shard_clips: tuple[int, ...]
    """clips in each shard; shards hold the videos' clips in `videos.parquet` order"""


@dataclass(frozen=True)
class HeldOut:
    """The validation split: whole videos, and the shards their clips are in (so validation reads only those)."""

    videos: frozenset[str]
    shards: tuple[str, ...]
    clips: int


def features_info(source: InputSource) -> FeaturesInfo:
    index = json.loads(source.read_bytes(fmt.INDEX))
    if index.get("format") not in fmt.READABLE_FORMATS:
        raise DataError(f"{source.uri} is not a features artifact of format {fmt.FORMAT}: rerun preprocess")
    shards = tuple(s["path"] for s in index["shards"])
    clips = tuple(s["clips"] for s in index["shards"])
    return FeaturesInfo(source.ref, index["feature_dim"], index["dim_2d"], shards, clips)


@contextmanager
def video_clip_counts(source: InputSource) -> Iterator[Iterator[tuple[str, int]]]:
    """(video id, clips) of every video in shard order, streamed from `videos.parquet` (HowTo100M has 1.2M)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="vlkd-videos-") as tmp:
        local = source.fetch(fmt.VIDEOS, Path(tmp) / fmt.VIDEOS)
        batches = pq.ParquetFile(local).iter_batches(batch_size=65536, columns=["video_id", "clips"])
        yield (row for b in batches for row in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True))


def _rank(seed: int, video_id: str) -> str:
    """A video's place in a seeded order: sorting by it draws a uniform random sample without replacement."""
    return hashlib.sha256(f"{seed}:{video_id}".encode()).hexdigest()


def validation_videos(videos: Iterable[tuple[str, int]], val_clips: int, seed: int) -> frozenset[str]:
    """Whole videos, in seeded-hash order, until they hold at least `val_clips` clips; one pass over `videos`
    ((id, clips) pairs), holding only the videos chosen so far."""
    if val_clips == 0:
        return frozenset()
    chosen: list[tuple[str, str, int]] = []  # a max-heap on rank (ranks negated by complement)
    held = total = 0
    for video_id, clips in videos:
        total += clips
        rank = _rank(seed, video_id)
        if held >= val_clips and rank > _largest(chosen):
            continue  # comes after the prefix that already holds enough
        heapq.heappush(chosen, (_complement(rank), video_id, clips))
        held += clips
        while held - chosen[0][2] >= val_clips:  # the largest rank is not needed to reach val_clips
            held -= heapq.heappop(chosen)[2]
    if val_clips >= total:
        raise DataError(f"val_size={val_clips} would hold out all {total} clips: set train.val_size below {total}")
    return frozenset(video_id for _, video_id, _ in chosen)


def _complement(rank: str) -> str:
    """A string that sorts in the reverse order of `rank` (hex digests of one length), for a max-heap."""
    return rank.translate(_REVERSE_HEX)


def _largest(chosen: list[tuple[str, str, int]]) -> str:
    return _complement(chosen[0][0]) if chosen else ""


_REVERSE_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def sample_videos(source: InputSource, size: int, seed: int) -> list[str]:
    """A seeded uniform sample of `size` videos that have clips (all of them if fewer), in sample order; one pass
    over `videos.parquet`, holding `size` ids."""
    kept: list[tuple[str, str]] = []  # a max-heap on rank: the `size` smallest ranks seen so far
    with video_clip_counts(source) as videos:
        for video_id, clips in videos:
            if clips == 0:
                continue
            item = (_complement(_rank(seed, video_id)), video_id)
            if len(kept) < size:
                heapq.heappush(kept, item)
            elif item > kept[0]:
                heapq.heapreplace(kept, item)
    return [video_id for _, video_id in sorted(kept, reverse=True)]


def shards_holding(source: InputSource, info: FeaturesInfo, videos: frozenset[str]) -> tuple[str, ...]:
    """The shards that hold clips of `videos`, from each video's clip offset in shard order."""
    return _shards_and_clips_of(source, info, videos)[0]


def _shards_and_clips_of(
    source: InputSource, info: FeaturesInfo, videos: frozenset[str]
) -> tuple[tuple[str, ...], int]:
    """The shards that hold clips of `videos`, and how many clips they have."""
    ends = list(itertools.accumulate(info.shard_clips))
    wanted: set[int] = set()
    offset = held = 0
    with video_clip_counts(source) as counts:
        for video_id, clips in counts:
            if video_id in videos and clips:
                first, last = bisect.bisect_right(ends, offset), bisect.bisect_right(ends, offset + clips - 1)
                wanted.update(range(first, last + 1))
                held += clips
            offset += clips
    return tuple(info.shards[i] for i in sorted(wanted)), held


def held_out(source: InputSource, info: FeaturesInfo, val_clips: int, seed: int) -> HeldOut:
    """The validation split of a features artifact for a run's `val_size` and seed (the teacher's and the eval
    stage's retrieval use the same one)."""
    with video_clip_counts(source) as counts:
        videos = validation_videos(counts, val_clips, seed)
    return HeldOut(videos, *_shards_and_clips_of(source, info, videos)) if videos else HeldOut(videos, (), 0)


CLIP_COLUMNS = ["video_id", "text", "num_frames", "features"]
"""What a training row of a features artifact holds: its video (for the teacher's batch statistics), the caption and
its clip's frames, flat float16"""


def _clip_groups(
    shard: InputFile, groups: list[int], source: InputSource, held: frozenset[str], inside: bool
) -> list[pa.Table]:
    """Ray Data task: row groups of a shard, each with its clips inside (or outside) the held-out videos, as Arrow
    tables. The features stay one flat float16 column: no per-clip object is made before `clip_features`."""
    import pyarrow.compute as pc

    held_ids = pa.array(sorted(held), pa.string())
    tables = read_row_groups(source, shard, groups, CLIP_COLUMNS)
    kept = []
    for table in tables:
        member = pc.is_in(table.column("video_id"), value_set=held_ids)
        chosen = member if inside else pc.invert(member)
        # A filter copies the frames even when it keeps every row: most row groups hold no held-out clip.
        kept.append(table if pc.all(chosen).as_py() else table.filter(chosen))
    return kept


def clip_datasets(
    store: ArtifactStore,
    ref: ArtifactRef | str,
    val_size: int,
    seed: int,
    resources: Resources,
    batch_size: int,
    window: int,
) -> tuple[dict[str, SplitReader], FeaturesInfo]:
    """The splits {"train", "validation"} of a features artifact, read as rows of `CLIP_COLUMNS` (`clip_features` pads
    them) in the order `vlkd.data.order` draws: `window` rows mixed at once, a new seeded order every pass. A pass over
    "train" reads its clips `passes_for` its size and `batch_size` times. Validation is read in its first pass's
    order every time, so successive evaluations see the same batches, drawn as training's are."""
    source = open_input(str(ref), store)
    info = features_info(source)
    validation = held_out(source, info, val_size, seed)

    def split(shards: tuple[str, ...], clips: tuple[int, ...], inside: bool, rows: int, passes: int) -> SplitReader:
        read = partial(_clip_groups, source=source.unlisted(), held=validation.videos, inside=inside)
        groups = tuple(-(-n // fmt.READ_ROWS) for n in clips)
        files = shard_files(source, shards)
        return SplitReader(files, groups, fmt.READ_ROWS, rows, read, resources, window, seed, passes)

    train_clips = sum(info.shard_clips) - validation.clips
    passes = passes_for(train_clips, batch_size, resources)
    shard_clips = dict(zip(info.shards, info.shard_clips, strict=True))
    held_clips = tuple(shard_clips[s] for s in validation.shards)
    datasets = {
        "train": split(info.shards, info.shard_clips, False, train_clips, passes),
        "validation": split(validation.shards, held_clips, True, validation.clips, 1),
    }
    return datasets, info


def clip_features(batch: pa.Table, max_frames: int, width: int, middle_frame: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `CLIP_COLUMNS` -> padded frame features [B, T, width] and their mask [B, T] bool (`_padded_frames`),
    read from the flat `features` column without a per-clip copy."""
    frames = batch.column("num_frames").to_numpy()
    values = fmt.flat_features(batch.column("features"))
    total = int(frames.sum())
    return _padded_frames(values.reshape(total, len(values) // max(1, total)), frames, max_frames, width, middle_frame)


def frames_of(
    clips: list[np.ndarray], max_frames: int, width: int, middle_frame: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`clip_features` of clips read one at a time (`features.read_clips`: [T_i, F] each) instead of as Arrow rows,
    so that every reader of a teacher's frames (its training, retrieval, the voken bank) gives it the same ones."""
    frames = np.array([len(f) for f in clips])
    return _padded_frames(np.concatenate(clips), frames, max_frames, width, middle_frame)


def _padded_frames(
    rows: np.ndarray, frames: np.ndarray, max_frames: int, width: int, middle_frame: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's frames one after another (`rows` [sum(frames), F], `frames` [B] per clip) -> padded features
    [B, T, width] in `rows`' dtype and their mask [B, T] bool (T the longest clip's frames rounded up to a multiple
    of `buckets.FRAMES`, at most `max_frames`): each clip's first `max_frames` frames, or only the middle one of
    those (image-level supervision, Table 6), and the first `width` columns of each frame (the 2D part is first).
    The features stay float16 as stored (the model casts them on its device: half the bytes to pin and copy) and are
    gathered in one indexing, not clip by clip, so the collate keeps up with a GPU step."""
    starts = np.cumsum(frames) - frames
    kept = np.minimum(frames, max_frames)
    if middle_frame:
        starts, kept = starts + kept // 2, np.ones_like(kept)
    longest = int(kept.max(initial=1))
    mask = np.arange(padded_length(longest, 1 if middle_frame else max_frames, FRAMES)) < kept[:, None]
    # Padding gathers row 0 and is zeroed after: one copy of the output, where a scatter into zeros makes two.
    padded = rows[:, :width][np.where(mask, starts[:, None] + np.arange(mask.shape[1]), 0)]
    padded[~mask] = 0
    return padded, mask
