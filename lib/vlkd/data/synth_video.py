"""Synthetic media files: the videos of a `VideoPlan` drawn with numpy and encoded with PyAV, and bad inputs.

Encoding is byte-for-byte reproducible: libx264 with one thread (frame threads make the output depend on timing)
and the muxer's bitexact flag (no library version strings). The bad inputs (garbage, truncated, audio-only)
let preprocessing tests check that unusable files are skipped, not fatal.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from vlkd.data.synth_world import BACKGROUNDS, COLOURS, SIZE, Actor, VideoPlan, position

_X264 = {"preset": "veryfast", "crf": "18", "threads": "1"}


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """bool [H, W]: pixels inside the shape centred at (cx, cy) with radius r (pixels)."""
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if shape == "square":
        return (np.abs(xx - cx) <= 0.9 * r) & (np.abs(yy - cy) <= 0.9 * r)
    if shape == "triangle":  # apex up; half-width grows from 0 at the apex to r at the base
        return (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
    raise ValueError(f"unknown shape {shape!r}; available: circle, square, triangle")


@functools.cache
def _pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of every pixel, float32 [height, width] each; made once per frame size."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def draw_frame(background: str, actors: tuple[Actor, ...], progress: float, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3] RGB: the actors at `progress` in [0, 1] of their segment, later ones on top.
    Each shape is drawn within its bounding box (every shape lies within its radius of its centre), which
    colours exactly the pixels a whole-frame mask would, at a fraction of the cost."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUNDS[background]
    yy, xx = _pixel_grid(width, height)
    radius = SIZE * min(width, height)
    for actor in actors:
        x, y = position(actor, progress)
        cx, cy = x * width, y * height
        top, bottom = max(0, math.floor(cy - radius)), min(height, math.ceil(cy + radius) + 1)
        left, right = max(0, math.floor(cx - radius)), min(width, math.ceil(cx + radius) + 1)
        if top >= bottom or left >= right:
            continue  # wholly outside the frame
        box = np.s_[top:bottom, left:right]
        frame[box][_shape_mask(actor.shape, xx[box], yy[box], cx, cy, radius)] = COLOURS[actor.colour]
    return frame


def render(plan: VideoPlan, width: int, height: int) -> Iterator[np.ndarray]:
    """Every frame of the video, in order: uint8 [height, width, 3]."""
    for segment in plan.segments:
        first, last = round(segment.start * plan.fps), round(segment.end * plan.fps)
        for index in range(first, last):
            yield draw_frame(plan.background, segment.actors, (index - first) / (last - first), width, height)


def encode_video(frames: Iterator[np.ndarray], path: Path, fps: int, width: int, height: int) -> None:
    """Write RGB frames (uint8 [height, width, 3]) as an H.264 yuv420p mp4 at `fps`; same frames, same bytes."""
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps, options=_X264)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video(plan: VideoPlan, path: Path, width: int, height: int) -> None:
    encode_video(render(plan, width, height), path, plan.fps, width, height)


def corrupt_video(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Write a garbage 'mp4' at `path`: a valid ftyp box, then random bytes; opening it fails."""
    ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    path.write_bytes(ftyp + random.Random(seed).randbytes(max(0, size - len(ftyp))))
    return path


def truncate_video(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """Write the first `fraction` of the mp4 `source` at `path`: like an interrupted download.

    Our mp4s keep the index (moov) after the media data, so the truncated file has no index and cannot be opened.
    """
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Write a valid AAC mp4 with a 440 Hz tone and no video stream."""
    t = np.arange(round(seconds * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
