"""Decoding real mp4 files with PyAV into the 1-per-second 2D frames and the aligned 3D windows."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vlkd.data.features import clip_frames
from vlkd.data.video import SamplingPlan, VideoError, decode_spans, decode_video


def write_counter_video(path: Path, seconds: float, fps: int, width: int = 96, height: int = 64) -> Path:
    """Frame k shows grey level 16 + 9 * (k mod 24) on its left half, so a decoded pixel says which frame (mod 24)
    it was, with margins wide enough for lossy colour conversion and scaling."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for k in range(round(seconds * fps)):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, : width // 2] = 16 + 9 * (k % 24)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_index(pixels: np.ndarray) -> int:
    """Recover k mod 24 from a decoded frame (centre-left pixel)."""
    height, width = pixels.shape[:2]
    return round((float(pixels[height // 2, width // 4].mean()) - 16) / 9)


@pytest.mark.parametrize(("seconds", "expected"), [(4.0, 4), (5.5, 5), (6.6, 7), (0.4, 0), (0.6, 1)])
def test_one_feature_per_second_whose_centre_lies_in_the_video(seconds, expected):
    assert SamplingPlan().feature_count(seconds) == expected


def test_2d_frames_are_sampled_at_the_centre_of_each_second(tmp_path):
    video = decode_video(write_counter_video(tmp_path / "v.mp4", 5.0, fps=30), SamplingPlan(size_2d=32, size_3d=16))
    assert video.frames_2d.shape == (5, 32, 32, 3) and video.frames_2d.dtype == np.uint8
    assert video.duration == pytest.approx(5.0, abs=0.05)
    # second i -> time i + 0.5 -> frame 30 * (i + 0.5) at 30 fps
    assert [frame_index(f) for f in video.frames_2d] == [k % 24 for k in (15, 45, 75, 105, 135)]


def test_3d_windows_are_16_frames_at_24_fps_containing_each_second(tmp_path):
    video = decode_video(write_counter_video(tmp_path / "v.mp4", 4.0, fps=24), SamplingPlan(size_2d=32, size_3d=16))
    assert video.clips_3d.shape == (4, 16, 16, 16, 3)
    # 1.5 windows per second; second i keeps window floor((i + 0.5) * 1.5), whose frames are 16k .. 16k + 15
    for i, clip in enumerate(video.clips_3d):
        first = int((i + 0.5) * 1.5) * 16
        assert [frame_index(f) for f in clip] == [min(first + j, 95) % 24 for j in range(16)]


def test_other_frame_rates_are_resampled_to_24_fps(tmp_path):
    video = decode_video(write_counter_video(tmp_path / "v.mp4", 2.0, fps=12), SamplingPlan(size_2d=32, size_3d=16))
    # at 12 fps each source frame is shown for two 24-fps ticks
    assert [frame_index(f) for f in video.clips_3d[0][:6]] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("stated", [True, False], ids=["stated-duration", "unstated-duration"])
def test_a_video_is_decoded_to_its_end_however_long_it_is(tmp_path, monkeypatch, stated):
    """Clips sit anywhere in a video (the paper's 512-frame cap is per clip): none may lose its frames for being
    late in a long one. A video whose duration is unstated is decoded until its last frame."""
    from vlkd.data import video

    path = write_counter_video(tmp_path / "long.mp4", 530.0, fps=1, width=32, height=32)
    if not stated:
        monkeypatch.setattr(video, "_duration", lambda container, stream: None)
    decoded = decode_video(path, SamplingPlan(size_2d=16, size_3d=16))
    assert decoded.num_features == len(decoded.clips_3d) == 530
    assert decoded.duration == pytest.approx(530.0, abs=0.05)
    # at 1 fps, second i shows frame i
    assert [frame_index(f) for f in decoded.frames_2d[510:]] == [i % 24 for i in range(510, 530)]


def test_frames_are_resized_short_side_then_centre_cropped(tmp_path):
    path = write_counter_video(tmp_path / "wide.mp4", 1.0, fps=24, width=128, height=64)
    frame = decode_video(path, SamplingPlan(size_2d=32, size_3d=16)).frames_2d[0]
    # 128x64 -> 64x32 -> centre 32x32: the bright left half covers the crop's left half exactly
    assert frame.shape == (32, 32, 3)
    bright = frame.mean(axis=(0, 2)) > 8
    assert bright[:15].all() and not bright[17:].any()


@pytest.mark.parametrize("fps", [1.0, 2.0], ids=["1fps", "2fps"])  # at 2 fps a 3D window outlasts the next feature
@pytest.mark.parametrize("span", [1, 2, 3, 7])
def test_a_video_decoded_in_spans_is_its_whole_decode_cut_in_order(tmp_path, span, fps):
    """Preprocessing rows carry spans, so a row's memory does not grow with the video; the features must not care."""
    path = write_counter_video(tmp_path / "v.mp4", 7.3, fps=30)
    plan = SamplingPlan(fps=fps, size_2d=32, size_3d=16)
    whole = decode_video(path, plan)
    *spans, end = decode_spans(path, plan, span)
    assert [s.index for s in spans] == list(range(-(-whole.num_features // span))) and end.spans == len(spans)
    assert all(len(s.frames_2d) == len(s.clips_3d) <= span for s in spans)
    np.testing.assert_array_equal(np.concatenate([s.frames_2d for s in spans]), whole.frames_2d)
    np.testing.assert_array_equal(np.concatenate([s.clips_3d for s in spans]), whole.clips_3d)
    assert end.duration == pytest.approx(whole.duration) == pytest.approx(7.3, abs=0.05)


def test_a_video_is_converted_by_a_scaler_per_size_giving_the_pixels_of_one_per_frame(tmp_path, monkeypatch):
    """Setting up a scaler for every frame (`frame.reformat`) cost more than decoding the frame."""
    from av.video.reformatter import VideoReformatter

    from vlkd.data import video

    made = []

    def counted() -> VideoReformatter:
        made.append(VideoReformatter())
        return made[-1]

    class PerFrame:
        def reformat(self, frame: av.VideoFrame, **options) -> av.VideoFrame:
            return frame.reformat(**options)

    path = write_counter_video(tmp_path / "v.mp4", 3.3, fps=30, width=128, height=64)
    plan = SamplingPlan(size_2d=32, size_3d=16)
    monkeypatch.setattr(video, "VideoReformatter", counted)
    kept = decode_video(path, plan)
    assert len(made) == 2  # for 3 2D frames and 48 3D ones
    monkeypatch.setattr(video, "VideoReformatter", PerFrame)
    fresh = decode_video(path, plan)
    np.testing.assert_array_equal(kept.frames_2d, fresh.frames_2d)
    np.testing.assert_array_equal(kept.clips_3d, fresh.clips_3d)


def test_a_corrupt_file_is_a_video_error(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(VideoError):
        decode_video(path, SamplingPlan())


def test_a_file_without_video_stream_is_a_video_error(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        decode_video(path, SamplingPlan())


@pytest.mark.parametrize(
    ("start", "end", "count", "expected"),
    [
        (0.0, 3.0, 10, (0, 3)),
        (2.2, 4.9, 10, (2, 5)),
        (3.1, 3.4, 10, (3, 4)),
        (8.0, 12.0, 10, (8, 10)),
        (11.0, 12.0, 10, None),
    ],
)
def test_clip_frames_are_the_seconds_whose_centre_lies_in_the_clip(start, end, count, expected):
    assert clip_frames(start, end, 1.0, count) == expected


def test_a_thumbnail_is_the_frame_of_its_feature_decoded_no_further_than_its_span(tmp_path, monkeypatch):
    """The eval report's retrieval thumbnails: a clip 3 s into a 140 s video decodes one span, not the video."""
    import vlkd.data.video as video

    path = write_counter_video(tmp_path / "v.mp4", 140.0, fps=2, width=32, height=32)
    plan = SamplingPlan(size_2d=32, size_3d=16, window=1)
    whole = decode_video(path, plan).frames_2d
    spans = []

    def counted(*args, **kwargs):
        for part in decode_spans(*args, **kwargs):
            spans.append(part)
            yield part

    monkeypatch.setattr(video, "decode_spans", counted)
    np.testing.assert_array_equal(video.frame_at(path, plan, 3), whole[3])
    assert len(spans) == 1 and len(whole) == 140
    np.testing.assert_array_equal(video.frame_at(path, plan, 139), whole[139])
    np.testing.assert_array_equal(video.frame_at(path, plan, 500), whole[-1])  # past the end: the last frame
