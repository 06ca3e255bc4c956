"""A teacher batch's frames, padded in one gather (`clip_features`, `frames_of`), are the frames the per-clip loop they
replaced gave, kept float16 as stored, on rows laid out as HowTo100M's are."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlkd.data import buckets
from vlkd.data import features as fmt
from vlkd.data.clips import clip_features, frames_of

DIMS = (6, 4)
MAX_FRAMES = 8


def per_clip_reference(
    clips: list[np.ndarray], max_frames: int, width: int, middle_frame: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The padding as it was before it was vectorised: one clip at a time, into float32."""
    kept = [min(len(c), max_frames) for c in clips]
    chosen = [c[k // 2 : k // 2 + 1] if middle_frame else c[:k] for c, k in zip(clips, kept, strict=True)]
    padded = np.zeros((len(clips), max(len(c) for c in chosen), width), np.float32)
    mask = np.zeros(padded.shape[:2], bool)
    for i, frames in enumerate(chosen):
        padded[i, : len(frames)] = frames[:, :width]
        mask[i, : len(frames)] = True
    return padded, mask


@pytest.fixture(scope="module")
def howto_clips() -> list[fmt.Clip]:
    """Videos of many clips stored together, of 1 to 3x `MAX_FRAMES` frames (some cut, most short), distinct
    values in every frame so that a frame taken from the wrong place shows."""
    rng = np.random.default_rng(0)
    clips = []
    for v in range(6):
        for c in range(int(rng.integers(5, 30))):
            frames = int(rng.choice([1, 1, 2, 3, 4, 5, MAX_FRAMES, MAX_FRAMES + 1, 3 * MAX_FRAMES]))
            features = rng.normal(size=(frames, sum(DIMS))).astype(np.float16)
            clips.append(fmt.Clip(f"video-{v}", c, 4.0 * c, 4.0 * c + 4, f"caption {c}", features))
    return clips


def batch_as_read(clips: list[fmt.Clip], start: int, size: int) -> pa.Table:
    """Rows `start:start + size` of a shard written and read back as training reads it: row groups of
    `fmt.READ_ROWS` (one chunk each), the batch a slice across them."""
    shard = pq.read_table(pa.BufferReader(fmt.parquet_bytes(fmt.clips_table(clips), fmt.READ_ROWS)))
    return shard.slice(start, size)


@pytest.mark.parametrize("middle_frame", [False, True])
@pytest.mark.parametrize("width", [sum(DIMS), DIMS[0]])
def test_clip_features_are_the_per_clip_padding_of_rows_read_from_a_shard(howto_clips, middle_frame, width):
    batch = batch_as_read(howto_clips, 20, 3 * fmt.READ_ROWS)
    assert batch.column("features").num_chunks > 1 and batch.column("features").chunk(0).offset > 0
    chosen = [c.features for c in howto_clips[20 : 20 + 3 * fmt.READ_ROWS]]
    padded, mask = clip_features(batch, MAX_FRAMES, width, middle_frame)
    expected, expected_mask = per_clip_reference(chosen, MAX_FRAMES, width, middle_frame)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(padded, expected)
    assert padded.shape == (len(chosen), 1 if middle_frame else MAX_FRAMES, width)


@pytest.mark.parametrize("middle_frame", [False, True])
def test_frames_of_clips_read_one_at_a_time_are_the_per_clip_padding(howto_clips, middle_frame):
    chosen = [c.features for c in howto_clips[: 2 * fmt.READ_ROWS]]
    padded, mask = frames_of(chosen, MAX_FRAMES, DIMS[0], middle_frame)
    expected, expected_mask = per_clip_reference(chosen, MAX_FRAMES, DIMS[0], middle_frame)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(padded, expected)


def test_a_batch_of_short_clips_is_padded_to_its_longest_rounded_to_a_bucket_not_to_max_frames(howto_clips):
    short = [c for c in howto_clips if len(c.features) <= 3][:10]
    padded, mask = clip_features(fmt.clips_table(short), MAX_FRAMES, sum(DIMS), middle_frame=False)
    assert max(len(c.features) for c in short) == 3 and padded.shape[1] == buckets.FRAMES < MAX_FRAMES
    assert not padded[:, 3:].any()
    assert mask.sum(1).tolist() == [len(c.features) for c in short]


def test_frames_stay_float16_as_stored_until_the_model_casts_them_on_its_device(howto_clips):
    """Half the bytes of float32 to collate, pin and copy to the GPU."""
    batch, clips = batch_as_read(howto_clips, 0, fmt.READ_ROWS), [c.features for c in howto_clips[:4]]
    for middle_frame in (False, True):
        assert clip_features(batch, MAX_FRAMES, DIMS[0], middle_frame)[0].dtype == np.float16
        assert frames_of(clips, MAX_FRAMES, DIMS[0], middle_frame)[0].dtype == np.float16
