"""Video decode for preprocess: PyAV's CUDA hardware decoder (NVDEC) against its CPU decoder, same files, same run.

    python -m bench.decode [--videos 4] [--seconds 20] [--width 640 --height 360]

On a GPU node preprocess is decode-bound (bench/README.md: the CPU decode was 72% of its time on an H200), and the
PyAV wheel is built with NVDEC (`av.codec.hwaccel.hwdevices_available()` lists `cuda`). Each form decodes every
frame of each video, as preprocess's one sequential pass does, and converts one frame a second to RGB at
`--size` (the 2D encoder's sampling) with a kept scaler; hardware frames are downloaded to host memory first, as
preprocess would need them. The videos are H.264 at a HowTo100M-like size, made here (noise under moving shapes,
so the encoder cannot make them trivially small). Without a CUDA device the hardware form is reported as not run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from bench.common import machine

FPS = 30


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


def decode(path: Path, size: int, hwaccel: av.codec.hwaccel.HWAccel | None) -> tuple[int, int]:
    """(frames decoded, frames converted): every frame, one a second converted to RGB `size` x `size`."""
    reformatter = VideoReformatter()
    decoded = converted = 0
    next_second = 0.0
    with av.open(str(path), hwaccel=hwaccel) as container:
        for frame in container.decode(video=0):
            decoded += 1
            if frame.time is not None and frame.time >= next_second:
                reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()
                converted += 1
                next_second += 1.0
    return decoded, converted


def timed_decode(paths: list[Path], size: int, hwaccel: av.codec.hwaccel.HWAccel | None) -> tuple[float, int]:
    """(seconds for all videos, frames decoded), after one warm-up video (the device's context is made there)."""
    decode(paths[0], size, hwaccel)
    start, frames = time.perf_counter(), 0
    for path in paths:
        frames += decode(path, size, hwaccel)[0]
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"PyAV {av.__version__}, hardware device types: {', '.join(av.codec.hwaccel.hwdevices_available())}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"v{i}.mp4" for i in range(args.videos)]
        for i, path in enumerate(paths):
            make_video(path, args.seconds, args.width, args.height, seed=i)
        print(f"{args.videos} videos of {args.seconds} s, {args.width}x{args.height} H.264 at {FPS} fps")
        cpu_s, frames = timed_decode(paths, args.size, None)
        print(f"cpu decode:  {cpu_s:.2f} s, {frames / cpu_s:,.0f} frames/s, {cpu_s / args.videos:.3f} s a video")
        try:
            cuda = av.codec.hwaccel.HWAccel("cuda", allow_software_fallback=False)
            cuda_s, cuda_frames = timed_decode(paths, args.size, cuda)
        except av.error.FFmpegError as exc:
            print(f"cuda decode: not run ({type(exc).__name__}: {exc})")
            return
        rate = cuda_frames / cuda_s
        print(f"cuda decode: {cuda_s:.2f} s, {rate:,.0f} frames/s, {cuda_s / args.videos:.3f} s a video")
        print(f"cuda / cpu: {cpu_s / cuda_s:.2f}x (frames {cuda_frames} vs {frames})")


if __name__ == "__main__":
    main()
