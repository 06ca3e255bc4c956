"""preprocess's `decoder`: the CPU decoder by default, NVDEC (PyAV's CUDA hwaccel) when asked, and a worker that
cannot decode with NVDEC fails the job with what to do instead of skipping every video as unreadable.

The tests of a machine without NVDEC skip where a CUDA decoder works, and those of NVDEC's frames and job where
none does: on a GPU node, `pytest tests/test_decoder_choice.py` checks the production path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vlkd.artifacts import collect_files
from vlkd.data.captions import Caption, dump_captions
from vlkd.data.synth import VIDEOS_DIR
from vlkd.data.video import DecodedSpan, SamplingPlan, VideoError, check_decoder, decode_spans, decode_video
from vlkd.errors import SpecError, VlkdError, error_lines
from vlkd.jobs import preprocess
from vlkd.specs import parse_spec


def _nvdec_works() -> bool:
    try:
        check_decoder("cuda")
    except VlkdError:
        return False
    return True


NVDEC = _nvdec_works()
without_nvdec = pytest.mark.skipif(NVDEC, reason="this machine decodes with NVDEC")
with_nvdec = pytest.mark.skipif(not NVDEC, reason="no NVDEC on this machine")


def preprocess_spec(**overrides):
    spec = {
        "stage": "preprocess",
        "name": "synth",
        "videos": "dataset/videos",
        "encoder_2d": {"name": "pixels", "image_size": 16},
        "encoder_3d": {"name": "pixel-motion", "image_size": 16},
    }
    return parse_spec({**spec, **overrides})


@pytest.fixture
def one_video(store, synth_root: Path, tmp_path: Path) -> None:
    """dataset/videos: one synthetic H.264 video and its caption."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(synth_root / VIDEOS_DIR / "synth_0000.mp4", folder / "one.mp4")
    (folder / "captions.jsonl").write_text(dump_captions([Caption("one", 0.0, 2.0, "a red circle")]))
    store.publish("dataset", "videos", collect_files([folder]))


def test_the_decoder_is_the_cpu_unless_the_spec_asks_for_cuda():
    assert preprocess_spec().decoder == "cpu"
    assert preprocess_spec(decoder="cuda").decoder == "cuda"


def test_an_unknown_decoder_is_rejected_at_its_field_with_the_choices():
    with pytest.raises(SpecError) as info:
        preprocess_spec(decoder="nvdec")
    (problem,) = info.value.problems
    assert problem.startswith("decoder: ") and "'cpu'" in problem and "'cuda'" in problem


@without_nvdec
def test_the_cuda_decoder_is_what_opens_the_video(synth_root: Path):
    """The hardware decoder reaches `av.open`: the same file the CPU decoder reads cannot be opened without a
    device (what `check_decoder` is there to say first)."""
    path = synth_root / VIDEOS_DIR / "synth_0000.mp4"
    plan = SamplingPlan(size_2d=16, size_3d=16)
    assert decode_video(path, plan).num_features > 0
    with pytest.raises(VideoError, match=r"^cannot open: "):
        list(decode_spans(path, plan, 4, "cuda"))


@without_nvdec
@pytest.mark.parametrize("store_uri", ["file"], indirect=True)
def test_a_worker_without_nvdec_fails_the_job_with_what_to_do(ray_session, store, job_context, one_video):
    with pytest.raises(VlkdError) as info:
        preprocess.run(preprocess_spec(decoder="cuda"), job_context)
    first = error_lines(info.value)[0]
    assert first.startswith("preprocess decoder: cuda needs an NVIDIA GPU with NVDEC on each worker that decodes")
    assert first.splitlines()[0].endswith("or set decoder: cpu")
    assert store.versions("features", "synth") == []


@with_nvdec
def test_nvdec_decodes_the_frames_the_cpu_decoder_does_but_for_a_few_levels(synth_root: Path):
    path = synth_root / VIDEOS_DIR / "synth_0000.mp4"
    plan = SamplingPlan(size_2d=32, size_3d=16)
    cpu, cuda = (list(decode_spans(path, plan, 2, decoder)) for decoder in ("cpu", "cuda"))
    assert cuda[-1] == cpu[-1]  # the same spans and duration
    for ours, theirs in zip(cpu[:-1], cuda[:-1], strict=True):
        assert isinstance(theirs, DecodedSpan)
        for a, b in ((ours.frames_2d, theirs.frames_2d), (ours.clips_3d, theirs.clips_3d)):
            assert a.shape == b.shape and np.abs(a.astype(np.int16) - b).mean() < 4  # of 255: not another picture


@with_nvdec
@pytest.mark.parametrize("store_uri", ["file"], indirect=True)
def test_a_worker_with_nvdec_publishes_features_that_say_so(ray_session, store, job_context, one_video):
    (manifest,) = preprocess.run(preprocess_spec(decoder="cuda"), job_context)
    assert manifest.attributes["decoder"] == "cuda"
    assert manifest.metrics["videos"] == 1 and manifest.metrics["skipped"] == 0
