"""Video decoding with PyAV into the two streams the frame encoders read (Sec. 4.2).

Feature i stands for the time span [i/fps, (i+1)/fps) and is sampled at its centre t_i = (i + 0.5)/fps:
- 2D stream: the frame shown at t_i.
- 3D stream: the video resampled to `input_fps` (24) and cut into windows of `window` (16) frames, i.e. one
  window per 16/24 s = 1.5 windows per second. Sub-sampling those to the 2D rate keeps, for each i, the window
  that contains t_i; only the kept windows are assembled.
Frames are resized so the short side equals the encoder's image size, then centre-cropped square, as the 2D
(CLIP, torchvision ResNet) and 3D (3D-ResNets-PyTorch) reference pipelines do. One sequential decode serves both
streams, because the 3D stream needs most frames anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


class VideoError(Exception):
    """A video that cannot be used: the reason is recorded as a skipped input, never raised to the user."""


@dataclass(frozen=True)
class SamplingPlan:
    fps: float = 1.0
    max_frames: int = 512
    size_2d: int = 224
    size_3d: int = 112
    input_fps_3d: float = 24.0
    window: int = 16

    def feature_count(self, duration: float) -> int:
        """Features for a video of `duration` seconds: spans whose centre lies inside it, at most max_frames."""
        return min(self.max_frames, max(0, math.ceil(duration * self.fps - 0.5)))

    def feature_times(self, count: int) -> np.ndarray:
        return (np.arange(count) + 0.5) / self.fps

    def window_starts(self, count: int) -> np.ndarray:
        """Index (on the input_fps grid) of the first frame of the 3D window kept for each feature."""
        windows = np.floor(self.feature_times(count) * self.input_fps_3d / self.window).astype(np.int64)
        return windows * self.window


@dataclass
class DecodedVideo:
    duration: float
    frames_2d: np.ndarray
    """uint8 [T, size_2d, size_2d, 3]"""
    clips_3d: np.ndarray
    """uint8 [T, window, size_3d, size_3d, 3]"""

    @property
    def num_features(self) -> int:
        return len(self.frames_2d)


def _resize_crop(frame: av.VideoFrame, size: int) -> np.ndarray:
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top : top + size, left : left + size]


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_video(path: str | Path, plan: SamplingPlan) -> DecodedVideo:
    """Decode the features' frames of one video; raise `VideoError` for files that cannot be used."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        if duration is not None and duration <= 0:
            raise VideoError("zero duration")
        try:
            return _decode(container, stream, duration, plan)
        except av.error.FFmpegError as exc:
            raise VideoError(f"corrupt video data: {exc}") from None


def _decode(container, stream, duration: float | None, plan: SamplingPlan) -> DecodedVideo:
    count = plan.feature_count(duration) if duration else plan.max_frames
    starts = plan.window_starts(count)
    grid = sorted({int(j) for s in starts for j in range(s, s + plan.window)})  # 3D input frames needed
    # Every target time with where its frame goes: the frame shown at a time is the last one stamped before it.
    targets = sorted(
        [(t, 0, i) for i, t in enumerate(plan.feature_times(count))] + [(j / plan.input_fps_3d, 1, j) for j in grid]
    )
    picked: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
    sizes = (plan.size_2d, plan.size_3d)
    shown, pos = None, 0
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        while shown is not None and pos < len(targets) and targets[pos][0] < frame.time:
            _, stream_index, key = targets[pos]
            picked[stream_index][key] = _resize_crop(shown, sizes[stream_index])
            pos += 1
        shown = frame
        if pos == len(targets):
            break
    if shown is None:
        raise VideoError("zero duration" if duration is None else "no decodable frames")
    end = duration or shown.time + 1 / float(stream.average_rate or plan.input_fps_3d)
    count = min(count, plan.feature_count(end))
    if count == 0:
        raise VideoError("zero duration")
    last = (_resize_crop(shown, plan.size_2d), _resize_crop(shown, plan.size_3d))  # shown until the end
    frames_2d = np.stack([picked[0].get(i, last[0]) for i in range(count)])
    clips = np.stack([np.stack([picked[1].get(j, last[1]) for j in range(s, s + plan.window)]) for s in starts[:count]])
    return DecodedVideo(duration=end, frames_2d=frames_2d, clips_3d=clips)
