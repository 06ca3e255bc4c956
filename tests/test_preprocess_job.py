"""The `preprocess` stage on a real local Ray with real mp4s: features, alignment, the cap on a clip's frames,
skipped inputs, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vlkd.artifacts import collect_files
from vlkd.data import features as fmt
from vlkd.data.captions import Caption, dump_captions, parse_captions
from vlkd.data.synth import VIDEOS_DIR, corrupt_video, write_audio_only
from vlkd.data.video import decode_video
from vlkd.errors import DataError
from vlkd.inputs import open_input
from vlkd.jobs import preprocess
from vlkd.models.frame_encoders import build_2d_encoder
from vlkd.specs import parse_spec

pytestmark = pytest.mark.timeout(300)
MAX_FRAMES = 2
"""frames per clip: the synthetic videos (4.4-5.9 s) have clips past it and clips longer than it"""


def preprocess_spec(**overrides):
    spec = {
        "stage": "preprocess",
        "name": "synth",
        "videos": "dataset/videos",
        "encoder_2d": {"name": "clip-vit-b32", "init": "random", "image_size": 32},
        "encoder_3d": {"name": "resnext3d", "depth": 50, "init": "random", "image_size": 32},
        "max_frames": MAX_FRAMES,
        "shard_size": 4,
    }
    return parse_spec({**spec, **overrides})


@pytest.fixture(scope="module")
def video_folder(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic videos plus every kind of bad input."""
    folder = tmp_path_factory.mktemp("bad-inputs") / "videos"
    shutil.copytree(synth_root / VIDEOS_DIR, folder)
    captions_file = folder / "captions.jsonl"
    captions, _ = parse_captions(captions_file.read_text().splitlines())
    corrupt_video(folder / "corrupt.mp4")
    write_audio_only(folder / "audio.mp4")
    shutil.copy(folder / "synth_0000.mp4", folder / "captionless.mp4")
    extra = [Caption(v, 0.0, 2.0, "a red circle moves up") for v in ("corrupt", "audio", "ghost")]
    captions_file.write_text(dump_captions(captions + extra) + "this line is not json\n")
    return folder


@pytest.fixture
def dataset(store, video_folder):
    return store.publish("dataset", "videos", collect_files([video_folder])).ref


def duration_of(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


@pytest.fixture(scope="module", params=["file", "s3"])
def published(request, ray_session, make_store, video_folder, tmp_path_factory):
    """One preprocess run per store backend, shared by the tests that only read its artifact."""
    from vlkd.runtime import JobContext

    folder = tmp_path_factory.mktemp(f"published-{request.param}")
    store = make_store(request.param, folder)
    store.publish("dataset", "videos", collect_files([video_folder]))
    (manifest,) = preprocess.run(preprocess_spec(), JobContext("vlkd-test-job", store, folder))
    return store, manifest


def load(store, manifest, tmp_path):
    out = tmp_path / f"fetched-{manifest.version}"
    store.fetch(manifest.ref, out)
    index = json.loads((out / fmt.INDEX).read_text())
    clips = [
        c for shard in index["shards"] for c in fmt.read_clips((out / shard["path"]).read_bytes(), index["feature_dim"])
    ]
    skipped = [json.loads(line) for line in (out / fmt.SKIPPED).read_text().splitlines()]
    return index, clips, skipped


def clip_seconds(video_folder: Path) -> list[tuple[Caption, int, int]]:
    """Each caption of a synthetic video and the seconds [first, stop) of its video it spans (its frames, uncapped)."""
    captions, _ = parse_captions((video_folder / "captions.jsonl").read_text().splitlines())
    spans = []
    for caption in (c for c in captions if c.video_id.startswith("synth_")):
        seconds = round(duration_of(video_folder / f"{caption.video_id}.mp4"))
        spans.append((caption, *fmt.clip_frames(caption.start, caption.end, 1.0, seconds)))
    return spans


def seconds_trimmed(video_folder: Path) -> list[int]:
    """For each clip longer than MAX_FRAMES, the seconds it loses."""
    return [stop - first - MAX_FRAMES for _, first, stop in clip_seconds(video_folder) if stop - first > MAX_FRAMES]


def test_features_are_published_with_bad_inputs_skipped(published, video_folder, tmp_path):
    store, manifest = published
    index, clips, skipped = load(store, manifest, tmp_path)

    assert manifest.parents == ["dataset/videos:v1"]
    assert manifest.attributes["random_init"] is True and manifest.attributes["encoder_2d"]["init"] == "random"
    assert manifest.attributes["decoder"] == "cpu"
    reasons = {s["item"]: s["reason"] for s in skipped}
    assert "no video stream" in reasons["audio.mp4"]
    assert reasons["corrupt.mp4"].startswith(("cannot open", "corrupt video data", "no decodable frames"))
    assert reasons["captionless.mp4"] == "no captions"
    assert reasons["ghost"] == "captions name a missing video (1 clips)"
    assert any(item.startswith("captions.jsonl:") and "not a caption record" in r for item, r in reasons.items())
    assert manifest.metrics["clips"] == len(clips) and manifest.metrics["videos"] == 6
    assert index["feature_dim"] == 512 + 2048 and index["dim_2d"] == 512
    assert [s["clips"] for s in index["shards"]][:-1] == [4] * (len(index["shards"]) - 1)
    assert all(np.isfinite(clip.features).all() for clip in clips)


def test_every_clip_is_kept_wherever_it_sits_in_its_video(published, video_folder, tmp_path):
    """max_frames caps a clip, not a video: clips that start past max_frames seconds are examples like any other."""
    store, manifest = published
    _, clips, skipped = load(store, manifest, tmp_path)
    expected = clip_seconds(video_folder)
    assert any(caption.start > MAX_FRAMES for caption, _, _ in expected)  # else this test would show nothing

    assert [s for s in skipped if s["item"].startswith("synth_")] == []
    kept = {(c.video_id, c.start): c.features.shape for c in clips}
    assert kept == {(c.video_id, c.start): (min(stop - first, MAX_FRAMES), 2560) for c, first, stop in expected}


def test_each_video_has_one_feature_per_second_of_its_whole_length(published, video_folder, tmp_path):
    store, manifest = published
    out = tmp_path / "f"
    store.fetch(manifest.ref, out)
    import pyarrow.parquet as pq

    rows = pq.read_table(out / fmt.VIDEOS).to_pylist()
    assert max(row["frames"] for row in rows) > MAX_FRAMES
    for row in rows:
        duration = duration_of(video_folder / f"{row['video_id']}.mp4")
        assert row["frames"] == round(duration)
        assert row["duration"] == pytest.approx(duration, abs=0.05)


def test_clip_features_are_the_concatenated_2d_and_3d_features_of_its_seconds(published, video_folder, tmp_path):
    spec = preprocess_spec()
    store, manifest = published
    _, clips, _ = load(store, manifest, tmp_path)
    clip = next(c for c in clips if c.video_id == "synth_0001")
    decoded = decode_video(video_folder / "synth_0001.mp4", preprocess.sampling_plan(spec))
    first = fmt.clip_frames(clip.start, clip.end, 1.0, decoded.num_features)[0]
    encoder = build_2d_encoder(spec.encoder_2d, None)  # seeded random init: the same weights as the job's
    expected = encoder.encode(torch.from_numpy(decoded.frames_2d[first : first + len(clip.features)])).numpy()
    np.testing.assert_allclose(clip.features[:, :512].astype(np.float32), expected, rtol=1e-2, atol=1e-3)


def test_a_clip_longer_than_max_frames_keeps_its_first_max_frames_seconds(published, video_folder, tmp_path):
    """A clip that starts past max_frames seconds into its video and is longer than max_frames."""
    spec = preprocess_spec()
    store, manifest = published
    _, clips, _ = load(store, manifest, tmp_path)
    caption, first, _ = next(
        (c, first, stop)
        for c, first, stop in clip_seconds(video_folder)
        if first >= MAX_FRAMES and stop - first > MAX_FRAMES
    )
    clip = next(c for c in clips if (c.video_id, c.start) == (caption.video_id, caption.start))
    assert clip.features.shape == (MAX_FRAMES, 2560)
    decoded = decode_video(video_folder / f"{caption.video_id}.mp4", preprocess.sampling_plan(spec))
    frames = torch.from_numpy(decoded.frames_2d[first : first + MAX_FRAMES])
    expected = build_2d_encoder(spec.encoder_2d, None).encode(frames).numpy()
    np.testing.assert_allclose(clip.features[:, :512].astype(np.float32), expected, rtol=1e-2, atol=1e-3)


def test_the_manifest_counts_the_clips_trimmed_to_max_frames_and_the_seconds_left_out(published, video_folder):
    _, manifest = published
    longer = seconds_trimmed(video_folder)
    assert len(longer) > 1
    assert manifest.metrics["trimmed_clips"] == len(longer)
    assert manifest.metrics["trimmed_seconds"] == sum(longer)


def test_artifacts_show_says_how_many_clips_max_frames_trimmed(published, video_folder, vlkd_cli, s3_endpoint):
    store, manifest = published
    longer = seconds_trimmed(video_folder)
    env = {"AWS_ENDPOINT_URL": s3_endpoint}
    shown = vlkd_cli("artifacts", "show", str(manifest.ref), "--store", store.uri, env=env)
    assert shown.returncode == 0, shown.stderr
    trimmed = f"{len(longer)} trimmed to max_frames ({MAX_FRAMES}), {sum(longer)} s left out"
    assert f"  clips     {manifest.metrics['clips']} clips from 6 videos; {trimmed};" in shown.stdout


@pytest.mark.parametrize("store_uri", ["file"], indirect=True)
def test_the_run_cache_is_kept_when_only_how_clips_are_cut_changes(store, dataset):
    """The cache holds each video's features: max_frames and the captions apply when clips are cut from them."""
    source = open_input("dataset/videos", store)
    key = preprocess.fingerprint(preprocess_spec(), source)
    assert preprocess.fingerprint(preprocess_spec(max_frames=64, captions="other.jsonl"), source) == key
    for changed in (
        {"fps": 2.0},
        {"span_features": 8},
        {"encoder_2d": {"name": "pixels", "image_size": 32}},
        {"decoder": "cuda"},
    ):
        assert preprocess.fingerprint(preprocess_spec(**changed), source) != key


@pytest.mark.parametrize("store_uri", ["s3"], indirect=True)  # the run cache as a cluster keeps it
def test_an_interrupted_run_resumes_without_encoding_again(
    ray_session, store, job_context, dataset, tmp_path, monkeypatch
):
    def crash(*args, **kwargs):
        raise RuntimeError("node lost before publishing")

    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "publish", crash)
        with pytest.raises(RuntimeError, match="node lost"):
            preprocess.run(preprocess_spec(), job_context)
    assert store.versions("features", "synth") == []

    encoded: list[str] = []
    original = preprocess.encode_videos
    monkeypatch.setattr(
        preprocess,
        "encode_videos",
        lambda spec, source, cache, store, todo: (
            encoded.extend(v.video_id for v in todo) or original(spec, source, cache, store, todo)
        ),
    )
    (resumed,) = preprocess.run(preprocess_spec(), job_context)
    assert resumed.metrics["reused_videos"] == 6
    assert sorted(encoded) == ["audio", "corrupt"]  # only the failures are tried again
    (fresh,) = preprocess.run(preprocess_spec(name="fresh"), job_context)
    assert fresh.metrics["reused_videos"] == 0
    assert {f.path: f.sha256 for f in resumed.files if f.path.startswith("shards/")} == {
        f.path: f.sha256 for f in fresh.files if f.path.startswith("shards/")
    }
    assert list(store.storage.list("cache")) == []  # the run cache is gone once published


def test_nothing_usable_fails_the_job_with_the_reasons(ray_session, store, job_context, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    corrupt_video(folder / "only.mp4")
    (folder / "captions.jsonl").write_text(dump_captions([Caption("only", 0.0, 2.0, "a red circle")]))
    store.publish("dataset", "videos", collect_files([folder]))
    with pytest.raises(DataError, match="no usable clips in dataset/videos:v1"):
        preprocess.run(preprocess_spec(), job_context)
    assert store.versions("features", "synth") == []


def test_videos_can_come_straight_from_a_uri(ray_session, store, job_context, video_folder, store_uri, tmp_path):
    if store_uri.startswith("s3://"):
        bucket = store_uri.split("/")[2]
        storage = store.storage
        for path in sorted(p for p in video_folder.rglob("*") if p.is_file()):
            storage.upload(f"raw/{path.relative_to(video_folder).as_posix()}", path)
        uri = f"s3://{bucket}/vlkd/raw"
    else:
        uri = video_folder.as_uri()
    (manifest,) = preprocess.run(preprocess_spec(videos=uri), job_context)
    assert manifest.parents == [] and manifest.attributes["source"] == uri
    assert manifest.metrics["videos"] == 6


@pytest.mark.parametrize("store_uri", ["s3"], indirect=True)
def test_an_encoder_actor_keeps_no_copy_of_the_weights_it_downloaded(store, tmp_path, monkeypatch):
    """Every actor of every job downloads its encoders' weights; once built, the encoder holds them, and the copy on
    the node's disk goes."""
    import tempfile

    from transformers import ResNetConfig, ResNetModel

    from vlkd.specs.data import Encoder2DSpec, Encoder3DSpec

    sizes = {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 2048], "embedding_size": 8}
    ResNetModel(ResNetConfig(layer_type="bottleneck", **sizes)).save_pretrained(tmp_path / "resnet")
    store.publish("weights", "small-resnet", collect_files([tmp_path / "resnet"]))
    machine = tmp_path / "machine-temp"
    machine.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(machine))
    encoder_2d = Encoder2DSpec(name="resnet152", image_size=32, weights="weights/small-resnet")
    actor = preprocess.EncodeVideos(encoder_2d, Encoder3DSpec(name="pixel-motion", image_size=32), store, None)
    expected = build_2d_encoder(encoder_2d, str(tmp_path / "resnet"))
    frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(actor.encode_2d(frames), expected.encode(frames))
    assert list(machine.iterdir()) == []
