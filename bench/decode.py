"""Video decode for preprocess: PyAV's CUDA hardware decoder (NVDEC) against its CPU decoder, same files, same run.

    python -m bench.decode [--videos 4] [--seconds 20] [--width 640 --height 360]

On a GPU node preprocess is decode-bound (bench/README.md: the CPU decode was 72% of its time on an H200), and the
PyAV wheel is built with NVDEC (`av.codec.hwaccel.hwdevices_available()` lists `cuda`). Both forms run preprocess's
own decode, `vlkd.data.video.decode_spans` with the spec's `decoder: cpu` or `decoder: cuda` (after its
once-per-worker `check_decoder`), in spans of the spec's default length: one sequential pass over every frame, each
frame the features use resized and cropped to `--size` (2D) and `--size-3d` (3D windows at 24 fps) on the CPU,
hardware frames downloaded to host memory first. The last line says how far NVDEC's pixels are from the CPU
decoder's (they differ slightly, which is why `decoder: cuda` makes another features variant). The videos are H.264
at a HowTo100M-like size, made here (noise under moving shapes, so the encoder cannot make them trivially small).
Where this worker cannot decode with NVDEC the hardware form is reported as not run, with the job's own message.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.common import machine
from vlkd.data.video import DecodedSpan, SamplingPlan, check_decoder, decode_spans
from vlkd.errors import VlkdError
from vlkd.specs import PreprocessSpec
from vlkd.specs.data import VideoDecoder

FPS = 30
SPAN = PreprocessSpec.model_fields["span_features"].default


def make_video(path: Path, seconds: int, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for i in range(seconds * FPS):
            frame = np.roll(base, 4 * i, axis=1)
            frame[(i * 3) % height : (i * 3) % height + height // 4, : width // 4] = (200, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode(path: Path, plan: SamplingPlan, decoder: VideoDecoder) -> tuple[np.ndarray, np.ndarray]:
    """A video's 2D frames [T, size, size, 3] and 3D windows [T, 16, size_3d, size_3d, 3], as preprocess decodes
    them."""
    spans = [part for part in decode_spans(path, plan, SPAN, decoder) if isinstance(part, DecodedSpan)]
    return np.concatenate([s.frames_2d for s in spans]), np.concatenate([s.clips_3d for s in spans])


def timed_decode(
    paths: list[Path], plan: SamplingPlan, decoder: VideoDecoder
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """(seconds for all videos, their frames), after the worker's check and one warm-up video, as a preprocess
    worker pays them once before its videos."""
    check_decoder(decoder)
    decode(paths[0], plan, decoder)
    start = time.perf_counter()
    frames = [decode(path, plan, decoder) for path in paths]
    return time.perf_counter() - start, frames


def difference(cpu: list[tuple[np.ndarray, np.ndarray]], cuda: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """How far the hardware decoder's frames are from the CPU decoder's, in pixel values of 0-255."""
    pairs = [pair for video in zip(cpu, cuda, strict=True) for pair in zip(*video, strict=True)]
    if any(a.shape != b.shape for a, b in pairs):
        return f"shapes differ: {[(a.shape, b.shape) for a, b in pairs]}"
    gaps = [np.abs(a.astype(np.int16) - b) for a, b in pairs]
    mean = sum(float(g.sum()) for g in gaps) / sum(g.size for g in gaps)
    return f"pixels differ by {mean:.2f} on average, {max(int(g.max()) for g in gaps)} at most, of 255"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--size", type=int, default=224, help="2D frame size (clip-vit-b32's)")
    parser.add_argument("--size-3d", type=int, default=112, help="3D frame size (resnext3d's)")
    args = parser.parse_args()
    plan = SamplingPlan(size_2d=args.size, size_3d=args.size_3d)
    print(f"machine: {machine()}")
    print(f"PyAV {av.__version__}, hardware device types: {', '.join(av.codec.hwaccel.hwdevices_available())}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"v{i}.mp4" for i in range(args.videos)]
        for i, path in enumerate(paths):
            make_video(path, args.seconds, args.width, args.height, seed=i)
        print(f"{args.videos} videos of {args.seconds} s, {args.width}x{args.height} H.264 at {FPS} fps")
        frames = args.videos * args.seconds * FPS
        cpu_s, cpu_frames = timed_decode(paths, plan, "cpu")
        print(f"cpu decode:  {cpu_s:.2f} s, {frames / cpu_s:,.0f} frames/s, {cpu_s / args.videos:.3f} s a video")
        try:
            cuda_s, cuda_frames = timed_decode(paths, plan, "cuda")
        except VlkdError as exc:
            print(f"cuda decode: not run ({exc})")
            return
        print(f"cuda decode: {cuda_s:.2f} s, {frames / cuda_s:,.0f} frames/s, {cuda_s / args.videos:.3f} s a video")
        print(f"cuda / cpu: {cpu_s / cuda_s:.2f}x ({difference(cpu_frames, cuda_frames)})")


if __name__ == "__main__":
    main()
