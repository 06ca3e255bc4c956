"""Reading artifacts for training: the held-out split and the voken bank's sample streamed from a `features`
artifact's tables, and Arrow rows collated into padded arrays."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vlkd.artifacts import collect_files
from vlkd.data import features as fmt
from vlkd.data.clips import (
    clip_features,
    features_info,
    held_out,
    sample_videos,
    shards_holding,
    validation_videos,
)
from vlkd.data.corpus import pad_sequences
from vlkd.data.ingest import MIN_PASS_BATCHES, passes_for
from vlkd.errors import DataError
from vlkd.inputs import open_input
from vlkd.specs import Resources

DIMS = (4, 2)


def rank(seed: int, video_id: str) -> str:
    return hashlib.sha256(f"{seed}:{video_id}".encode()).hexdigest()


def write_features(folder: Path, clips_per_video: list[int], shard_size: int) -> Path:
    """A features artifact's files written directly: video i has clips_per_video[i] clips of 2 frames."""
    folder.mkdir(parents=True)

    def put(path: str, local: Path) -> None:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, folder / path)

    scratch = folder.parent / f"{folder.name}-scratch"
    scratch.mkdir()
    writer = fmt.FeaturesWriter(put, scratch, shard_size, DIMS, 1.0, 16)
    rng = np.random.default_rng(0)
    for i, count in enumerate(clips_per_video):
        video_id = f"v{i:03d}"
        features = rng.normal(size=(count, 2, sum(DIMS))).astype(np.float16)
        clips = [fmt.Clip(video_id, c, 2.0 * c, 2.0 * c + 2, f"caption {c}", features[c]) for c in range(count)]
        writer.add_video(video_id, 2.0 * count, 2 * count, clips)
    writer.close()
    return folder


@pytest.fixture
def features(store, tmp_path):
    counts = [3, 0, 2, 5, 1, 4, 2, 2, 0, 3, 6, 1] * 3
    folder = write_features(tmp_path / "features", counts, shard_size=4)
    store.publish("features", "f", collect_files([folder]))
    return open_input("features/f", store), counts


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("val_clips", [1, 5, 20, 60])
def test_validation_videos_are_the_shortest_prefix_of_the_seeded_order_holding_enough_clips(seed, val_clips):
    rng = random.Random(seed)
    videos = [(f"video-{i}", rng.choice([0, 1, 2, 3, 8])) for i in range(200)]
    expected, held = set(), 0
    for video_id, clips in sorted(videos, key=lambda v: rank(seed, v[0])):
        if held >= val_clips:
            break
        expected.add(video_id)
        held += clips
    assert validation_videos(iter(videos), val_clips, seed) == expected


def test_holding_out_every_clip_is_refused():
    with pytest.raises(DataError, match="val_size=10 would hold out all 10 clips"):
        validation_videos(iter([("a", 4), ("b", 6)]), 10, 0)


def test_the_video_sample_is_seeded_uniform_and_skips_videos_without_clips(features):
    source, counts = features
    with_clips = [f"v{i:03d}" for i, c in enumerate(counts) if c]
    sample = sample_videos(source, 10, seed=3)
    assert sample == sorted(with_clips, key=lambda v: rank(3, v))[:10]
    assert sample_videos(source, 10, seed=3) == sample and sample_videos(source, 10, seed=4) != sample
    assert sorted(sample_videos(source, 1000, seed=3)) == with_clips  # fewer videos than asked: all of them


def test_the_shards_holding_videos_are_found_from_the_video_table(features):
    source, _ = features
    info = features_info(source)
    where: dict[str, set[str]] = {}
    for path in info.shards:
        for clip in fmt.read_clips(source.read_bytes(path), info.feature_dim):
            where.setdefault(clip.video_id, set()).add(path)
    for video_id, paths in where.items():
        assert set(shards_holding(source, info, frozenset({video_id}))) == paths, video_id
    chosen = frozenset(list(where)[::5])
    assert set(shards_holding(source, info, chosen)) == set().union(*(where[v] for v in chosen))


def test_validation_reads_only_the_shards_of_held_out_videos(features):
    source, _ = features
    info = features_info(source)
    split = held_out(source, info, 6, seed=0)
    clips = [c for p in split.shards for c in fmt.read_clips(source.read_bytes(p), info.feature_dim)]
    held = [c for c in clips if c.video_id in split.videos]
    assert {c.video_id for c in held} == split.videos and len(held) >= 6 and split.clips == len(held)
    assert len(split.shards) < len(info.shards)


def test_a_pass_over_a_small_split_reads_it_until_a_worker_gets_min_pass_batches_and_a_large_one_once():
    one, two = Resources(num_workers=0), Resources(num_workers=2)
    assert passes_for(704, 32, one) == 10 and 22 * 10 >= MIN_PASS_BATCHES > 22 * 9  # the quickstart teacher's split
    assert passes_for(704, 32, two) == 19  # each of two workers gets half: 11 batches a read
    assert passes_for(32 * MIN_PASS_BATCHES, 32, one) == 1 and passes_for(10**9, 32, two) == 1
    assert passes_for(31, 32, one) == passes_for(63, 32, two) == 1  # no whole batch: once, to fail as a short shard


def test_clip_features_are_padded_truncated_and_cut_to_the_2d_columns_of_the_middle_frame():
    clips = [np.arange(n * 6, dtype=np.float16).reshape(n, 6) + 100 * i for i, n in enumerate((3, 1, 5))]
    rows = pa.table(
        {"text": ["a", "b", "c"], "num_frames": pa.array([3, 1, 5], pa.int32()), "features": [c.ravel() for c in clips]}
    )
    padded, mask = clip_features(rows, max_frames=4, width=6, middle_frame=False)
    assert padded.shape == (3, 4, 6) and mask.sum(1).tolist() == [3, 1, 4]
    np.testing.assert_array_equal(padded[2], clips[2][:4])
    np.testing.assert_array_equal(padded[1, 1:], 0)
    middle, middle_mask = clip_features(rows, max_frames=4, width=4, middle_frame=True)
    assert middle.shape == (3, 1, 4) and middle_mask.all()
    np.testing.assert_array_equal(middle[:, 0], [clips[0][1, :4], clips[1][0, :4], clips[2][2, :4]])


def test_token_sequences_are_padded_from_their_arrow_column_to_a_few_fixed_lengths():
    """To the longest rounded up to 16 tokens, at most the spec's max_len; a slice of a column reads its own rows."""
    lists = pa.list_(pa.int32())
    column = pa.chunked_array([pa.array([[2, 7, 3], [2, 3]], lists), pa.array([[2, 8, 9, 3]], lists)])
    ids, mask = pad_sequences(column, pad_id=0, max_len=128)
    assert ids.tolist() == [[2, 7, 3, *[0] * 13], [2, 3, *[0] * 14], [2, 8, 9, 3, *[0] * 12]]
    assert mask.tolist() == [[1] * 3 + [0] * 13, [1] * 2 + [0] * 14, [1] * 4 + [0] * 12]
    ids, mask = pad_sequences(column, pad_id=0, max_len=6)
    assert ids.tolist() == [[2, 7, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0], [2, 8, 9, 3, 0, 0]]
    sliced = pa.array([[1], [2, 7, 3], [2, 3, 5, 6, 7]], lists).slice(1, 2)
    ids, mask = pad_sequences(sliced, pad_id=0, max_len=5)
    assert ids.tolist() == [[2, 7, 3, 0, 0], [2, 3, 5, 6, 7]] and mask.sum() == 8


def test_shards_of_format_v1_are_still_read():
    """v1 kept features as list<float16>; v2 keeps bytes (ten times faster to decode). Both read the same."""
    clips = [fmt.Clip("v", i, 0.0, 1.0, "t", np.full((n, 3), i, np.float16)) for i, n in enumerate((2, 1))]
    v2 = fmt.clips_table(clips)
    v1 = v2.set_column(6, "features", pa.array([c.features.ravel() for c in clips], pa.list_(pa.float16())))
    for table in (v1, v2):
        read = list(fmt.read_clips(fmt.parquet_bytes(table), 3))
        assert [c.features.tolist() for c in read] == [c.features.tolist() for c in clips]
        np.testing.assert_array_equal(fmt.flat_features(table.column("features")), [0] * 6 + [1] * 3)
