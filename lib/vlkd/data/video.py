"""Video decoding with PyAV into the two streams the frame encoders read (Sec. 4.2).

Feature i stands for the time span [i/fps, (i+1)/fps) and is sampled at its centre t_i = (i + 0.5)/fps:
- 2D stream: the frame shown at t_i.
- 3D stream: the video resampled to `input_fps` (24) and cut into windows of `window` (16) frames, i.e. one
  window per 16/24 s = 1.5 windows per second. Sub-sampling those to the 2D rate keeps, for each i, the window
  that contains t_i; only the kept windows are assembled.
Frames are resized so the short side equals the encoder's image size, then centre-cropped square, as the 2D
(CLIP, torchvision ResNet) and 3D (3D-ResNets-PyTorch) reference pipelines do. One sequential decode serves both
streams, because the 3D stream needs most frames anyway. The decoder is FFmpeg's own (`cpu`) or NVDEC (`cuda`,
PyAV's hwaccel), whose frames are downloaded to host memory and converted like the CPU decoder's.
"""

from __future__ import annotations

import heapq
import io
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel
from av.video.reformatter import VideoReformatter

from vlkd.errors import VlkdError, first_line
from vlkd.specs.data import VideoDecoder


class VideoError(Exception):
    """A video that cannot be used: the reason is recorded as a skipped input, never raised to the user."""


@dataclass(frozen=True)
class SamplingPlan:
    """Which frames make a video's features. It has no cap on their number: a video is decoded to its end, in spans
    of bounded memory, and the cap on frames (`max_frames`, Sec. 4.3) applies to each clip, where preprocessing and
    the teacher cut them."""

    fps: float = 1.0
    size_2d: int = 224
    size_3d: int = 112
    input_fps_3d: float = 24.0
    window: int = 16

    def feature_count(self, duration: float) -> int:
        """Features for a video of `duration` seconds: spans whose centre lies inside it."""
        return max(0, math.ceil(duration * self.fps - 0.5))

    def feature_times(self, stop: int, start: int = 0) -> np.ndarray:
        """Centre times of features [start, stop)."""
        return (np.arange(start, stop) + 0.5) / self.fps

    def window_starts(self, stop: int, start: int = 0) -> np.ndarray:
        """Index (on the input_fps grid) of the first frame of the 3D window kept for features [start, stop)."""
        windows = np.floor(self.feature_times(stop, start) * self.input_fps_3d / self.window).astype(np.int64)
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


@dataclass
class DecodedSpan:
    """Consecutive features of a video: what one preprocessing row carries, so that a row's memory is bounded by
    the span's length, not the video's."""

    index: int
    """the span's place in the video (0, 1, ...); it starts at feature `index * span`"""
    frames_2d: np.ndarray
    """uint8 [n, size_2d, size_2d, 3]"""
    clips_3d: np.ndarray
    """uint8 [n, window, size_3d, size_3d, 3]"""


@dataclass(frozen=True)
class VideoEnd:
    """What ends a video's spans: how many there were and the video's duration (an unstated duration is known only
    once the last frame is decoded)."""

    spans: int
    duration: float


def _resize_crop(frame: av.VideoFrame, size: int, reformatter: VideoReformatter) -> np.ndarray:
    """`reformatter` keeps its scaler between calls of the same sizes: `frame.reformat` would set up a new one for
    every frame, which costs more than decoding the frame (bench/frame_resize.py)."""
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top : top + size, left : left + size]


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _hwaccel(decoder: VideoDecoder) -> HWAccel | None:
    """What `av.open` decodes with. No software fallback: a video NVDEC cannot decode is skipped with its reason,
    never decoded on the CPU into an artifact whose manifest says cuda. `primary_ctx` makes each video's decoder
    share the process's CUDA context (`check_decoder` keeps it alive) instead of creating and destroying one per
    video."""
    if decoder == "cpu":
        return None
    return HWAccel(decoder, allow_software_fallback=False, options={"primary_ctx": "1"})


_DEVICES: dict[str, HWAccel] = {}
"""the hardware decoders checked in this process, each holding its device context for the process's life"""


def check_decoder(decoder: VideoDecoder) -> None:
    """Make sure this process can decode with `decoder`, once per process, before its first video: a machine
    without it fails the job with what to do, where opening each video would only skip every one as unreadable.
    The check decodes a clip made here, which proves the driver's decoder library (libnvcuvid) is there too, not
    only the device."""
    if decoder == "cpu" or decoder in _DEVICES:
        return
    try:
        device = _hwaccel(decoder).create(av.codec.Codec("h264", "r"))
        with av.open(io.BytesIO(_probe_clip()), format="h264", hwaccel=_hwaccel(decoder)) as container:
            next(container.decode(video=0))
    except (av.error.FFmpegError, NotImplementedError, RuntimeError, StopIteration) as exc:
        raise VlkdError(
            f"preprocess decoder: {decoder} needs an NVIDIA GPU with NVDEC on each worker that decodes, and "
            f"{socket.gethostname()} cannot decode with it ({type(exc).__name__}: {first_line(exc)}): run preprocess "
            "on GPU workers (resources.gpus_per_worker >= 1; the container needs the driver's `video` capability), "
            "or set decoder: cpu"
        ) from None
    _DEVICES[decoder] = device


def _probe_clip() -> bytes:
    """Two frames of raw H.264 (the codec of HowTo100M's videos), 256x256 (above NVDEC's smallest)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), "rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_spans(
    path: str | Path, plan: SamplingPlan, span: int, decoder: VideoDecoder = "cpu"
) -> Iterator[DecodedSpan | VideoEnd]:
    """Decode one video's feature frames in spans of `span` features, each yielded as soon as the decoder has
    passed it (one sequential decode for the whole video), then a `VideoEnd`; raise `VideoError` for a file that
    cannot be used, possibly after some spans. A hardware `decoder` needs `check_decoder` first: without the
    device, this only says the file cannot be opened."""
    hwaccel = _hwaccel(decoder)
    try:
        container = av.open(str(path), hwaccel=hwaccel)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open: {exc}") from None
    except RuntimeError as exc:  # PyAV's: a hardware decoder and no stream it can decode
        raise VideoError(f"no video stream the {decoder} decoder can decode ({exc}; decoder: cpu may)") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        if duration is not None and duration <= 0:
            raise VideoError("zero duration")
        try:
            yield from _SpanDecoder(plan, span, duration).run(container, stream)
        except av.error.FFmpegError as exc:
            beyond = "" if hwaccel is None else f", or data the {decoder} decoder cannot decode (decoder: cpu may)"
            raise VideoError(f"corrupt video data{beyond}: {exc}") from None


_WHOLE_VIDEO_SPAN = 64
"""features per span when `decode_video` joins them: any span gives the same frames, so this only sets how many
pieces are joined"""


def decode_video(path: str | Path, plan: SamplingPlan) -> DecodedVideo:
    """The features' frames of one whole video (for readers that want it at once; preprocessing uses spans)."""
    *spans, end = decode_spans(path, plan, _WHOLE_VIDEO_SPAN)
    return DecodedVideo(
        duration=end.duration,
        frames_2d=np.concatenate([s.frames_2d for s in spans]),
        clips_3d=np.concatenate([s.clips_3d for s in spans]),
    )


def frame_at(path: str | Path, plan: SamplingPlan, feature: int) -> np.ndarray:
    """The 2D frame of one feature (the video's last when it has fewer), decoding no further than its span: a
    thumbnail of a clip near the start of an hour-long video costs seconds of decoding, not the hour."""
    last = None
    for part in decode_spans(path, plan, _WHOLE_VIDEO_SPAN):
        if isinstance(part, VideoEnd):
            break
        first = part.index * _WHOLE_VIDEO_SPAN
        if feature < first + len(part.frames_2d):
            return part.frames_2d[feature - first]
        last = part.frames_2d[-1]
    if last is None:
        raise VideoError("no frame decoded")
    return last


class _SpanDecoder:
    """Assigns decoded frames to the times the features need (the frame shown at a time is the last one stamped
    before it) and hands out each span once all of its times are behind the decoder. It knows the times of two
    spans at a time (a span's last 3D window can reach past the next span's first feature at fps above 1) and holds
    about two spans' frames, whatever the video's length. A video of unstated duration has unbounded `count` and
    `spans` until its last frame is decoded."""

    def __init__(self, plan: SamplingPlan, span: int, duration: float | None) -> None:
        self.plan, self.span, self.duration = plan, span, duration
        self.count: float = plan.feature_count(duration) if duration else math.inf
        self.spans: float = -(-self.count // span) if duration else math.inf
        self.picked: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
        self.sizes = (plan.size_2d, plan.size_3d)
        self.reformatters = (VideoReformatter(), VideoReformatter())  # one per size: each keeps one scaler
        self.targets: list[tuple[float, int, int, int]] = []  # a heap of (time, kind, key, span)
        self.waiting: dict[int, int] = {}  # span -> its targets not yet assigned
        self._last_3d = -1  # the last 3D frame index queued (a window two spans share is queued once)

    def _queue(self, index: int) -> None:
        """Queue span `index`'s times: (time, 0, feature) for 2D frames, (time, 1, frame index) for 3D ones."""
        if index >= self.spans:
            return
        first, stop = index * self.span, min((index + 1) * self.span, self.count)
        window = self.plan.window
        grid = sorted({int(j) for s in self.plan.window_starts(stop, first) for j in range(s, s + window)})
        items = [(float(t), 0, first + i) for i, t in enumerate(self.plan.feature_times(stop, first))]
        items += [(j / self.plan.input_fps_3d, 1, j) for j in grid if j > self._last_3d]
        self._last_3d = max(self._last_3d, grid[-1])
        for time, kind, key in items:
            heapq.heappush(self.targets, (time, kind, key, index))
        self.waiting[index] = len(items)

    def run(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[DecodedSpan | VideoEnd]:
        shown, done = None, 0
        self._queue(0)
        self._queue(1)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            while shown is not None and self.targets and self.targets[0][0] < frame.time:
                _, kind, key, index = heapq.heappop(self.targets)
                self.picked[kind][key] = self._convert(shown, kind)
                self.waiting[index] -= 1
                while done < self.spans and self.waiting.get(done) == 0:  # every time of span `done` is behind
                    yield self._span(done, self.count, None)
                    del self.waiting[done]
                    done += 1
                    self._queue(done + 1)
            shown = frame
            if done == self.spans:
                break
        if shown is None:
            raise VideoError("zero duration" if self.duration is None else "no decodable frames")
        end = self.duration or shown.time + 1 / float(stream.average_rate or self.plan.input_fps_3d)
        # Spans handed out so far lie inside the video (their times came before a decoded frame); a video shorter
        # than its stated length, or of unstated length, ends here.
        count = min(self.count, self.plan.feature_count(end))
        if count == 0:
            raise VideoError("zero duration")
        fill = (self._convert(shown, 0), self._convert(shown, 1))  # shown until the end
        spans = -(-count // self.span)
        for index in range(done, spans):
            yield self._span(index, count, fill)
        yield VideoEnd(spans, end)

    def _convert(self, frame: av.VideoFrame, kind: int) -> np.ndarray:
        return _resize_crop(frame, self.sizes[kind], self.reformatters[kind])

    def _span(self, index: int, count: float, fill: tuple[np.ndarray, np.ndarray] | None) -> DecodedSpan:
        """Span `index` from the picked frames (`fill` for times past the last frame); frees what no later span
        needs."""
        first, stop = index * self.span, min((index + 1) * self.span, count)
        window = self.plan.window
        starts = self.plan.window_starts(stop, first)

        def frame(kind: int, key: int) -> np.ndarray:
            return self.picked[kind][key] if fill is None else self.picked[kind].get(key, fill[kind])

        frames_2d = np.stack([frame(0, i) for i in range(first, stop)])
        clips = np.stack([np.stack([frame(1, j) for j in range(s, s + window)]) for s in starts])
        for i in range(first, stop):
            self.picked[0].pop(i, None)
        keep_from = self.plan.window_starts(stop + 1, stop)[0] if stop < self.count else np.inf
        for j in [j for j in self.picked[1] if j < keep_from]:
            del self.picked[1][j]
        return DecodedSpan(index, frames_2d, clips)
