"""Preprocess throughput: vlkd's decode/encode/write path against a naive baseline, same videos, same process.

    python -m bench.preprocess [--videos 8] [--size-2d 64] [--size-3d 32]

vlkd: one decode pass that converts only the frames the features need, batched 2D and 3D encoders.
Baseline: every frame decoded and converted, then each 2D frame and each 3D window encoded on its own.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from bench.common import machine
from vlkd.data import features as fmt
from vlkd.data.synth import VIDEOS_DIR, SynthConfig, generate
from vlkd.data.video import SamplingPlan, decode_video
from vlkd.models.frame_encoders import build_2d_encoder, build_3d_encoder
from vlkd.specs import Encoder2DSpec, Encoder3DSpec


def naive_decode(path: Path, plan: SamplingPlan) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Convert every frame to RGB at both sizes, then pick the sampled ones."""
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append((frame.to_ndarray(format="rgb24"), frame.time))
            times.append(frame.time)
    duration = times[-1] + (times[1] - times[0] if len(times) > 1 else 1 / 24)
    count = plan.feature_count(duration)

    def shown(t: float) -> np.ndarray:
        index = max(0, int(np.searchsorted(times, t, side="right")) - 1)
        return frames[index][0]

    def resize(image: np.ndarray, size: int) -> np.ndarray:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        return (
            torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear")[0]
            .permute(1, 2, 0)
            .byte()
            .numpy()
        )

    frames_2d = [resize(shown(t), plan.size_2d) for t in plan.feature_times(count)]
    clips = [
        np.stack([resize(shown(j / plan.input_fps_3d), plan.size_3d) for j in range(s, s + plan.window)])
        for s in plan.window_starts(count)
    ]
    return frames_2d, clips


def run_vlkd(paths, plan, encoders) -> dict[str, float]:
    timing = {"decode": 0.0, "encode": 0.0, "write": 0.0}
    for path in paths:
        start = time.perf_counter()
        video = decode_video(path, plan)
        timing["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        features = torch.cat(
            [
                encoders[0].encode(torch.from_numpy(video.frames_2d)),
                encoders[1].encode(torch.from_numpy(video.clips_3d)),
            ],
            1,
        ).cpu()
        timing["encode"] += time.perf_counter() - start
        start = time.perf_counter()
        clip = fmt.Clip(path.stem, 0, 0.0, float(len(features)), "", features.numpy().astype(np.float16))
        fmt.parquet_bytes(fmt.clips_table([clip]))
        timing["write"] += time.perf_counter() - start
    return timing


def run_naive(paths, plan, encoders) -> dict[str, float]:
    timing = {"decode": 0.0, "encode": 0.0, "write": 0.0}
    for path in paths:
        start = time.perf_counter()
        frames_2d, clips = naive_decode(path, plan)
        timing["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        rows_2d = [encoders[0].encode(torch.from_numpy(f[None])) for f in frames_2d]
        rows_3d = [encoders[1].encode(torch.from_numpy(c[None])) for c in clips]
        features = torch.cat([torch.cat(rows_2d), torch.cat(rows_3d)], 1).cpu()
        timing["encode"] += time.perf_counter() - start
        start = time.perf_counter()
        buffer = io.BytesIO()
        np.save(buffer, features.numpy().astype(np.float16))
        timing["write"] += time.perf_counter() - start
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--size-2d", type=int, default=64)
    parser.add_argument("--size-3d", type=int, default=32)
    parser.add_argument("--encoder-2d", default="resnet152", choices=["resnet152", "clip-vit-b32"])
    parser.add_argument("--depth-3d", type=int, default=50, choices=[50, 101, 152])
    args = parser.parse_args()

    spec_2d = Encoder2DSpec(name=args.encoder_2d, init="random", image_size=args.size_2d, batch_size=64)
    spec_3d = Encoder3DSpec(depth=args.depth_3d, init="random", image_size=args.size_3d, batch_size=16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoders = (build_2d_encoder(spec_2d, None, device), build_3d_encoder(spec_3d, None, device))
    plan = SamplingPlan(size_2d=args.size_2d, size_3d=args.size_3d)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(
            Path(tmp) / "synth",
            SynthConfig(num_videos=args.videos, corpus_paragraphs=10, task_train_examples=4, task_dev_examples=4),
        )
        paths = sorted((Path(tmp) / "synth" / VIDEOS_DIR).glob("*.mp4"))
        run_vlkd(paths[:1], plan, encoders)  # warm-up: allocator, kernels
        results = {"vlkd": run_vlkd(paths, plan, encoders), "naive": run_naive(paths, plan, encoders)}

    print(f"machine: {machine()}")
    print(f"{len(paths)} videos, {summary.video_seconds:.0f} s of video")
    print(f"2D {args.encoder_2d} @{args.size_2d}px, 3D resnext3d-{args.depth_3d} @{args.size_3d}px, random weights")
    print(f"{'':8}{'videos/s':>10}{'decode s/video':>16}{'encode s/video':>16}{'write s/video':>15}")
    for name, timing in results.items():
        total = sum(timing.values())
        per = {k: v / len(paths) for k, v in timing.items()}
        print(f"{name:8}{len(paths) / total:>10.2f}{per['decode']:>16.3f}{per['encode']:>16.3f}{per['write']:>15.4f}")
    speedup = sum(results["naive"].values()) / sum(results["vlkd"].values())
    print(f"speed-up of vlkd over the naive baseline: {speedup:.2f}x")


if __name__ == "__main__":
    main()
