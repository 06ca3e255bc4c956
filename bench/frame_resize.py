"""What converting a decoded frame (resize to the encoder's size, RGB) costs the preprocess decode: a scaler kept
per output size against one set up per frame.

    python -m bench.frame_resize [--videos 4] [--width 640 --height 360] [--size-2d 224 --size-3d 112]

Decodes the same synthetic videos with `vlkd.data.video.decode_video`, in this process, alternating between a new
scaler for every converted frame (the baseline: `frame.reformat`, what the decoder did before) and one
`VideoReformatter` per output size kept for the whole video (what it does now). Reports CPU milliseconds per video
of each, the decode alone (no conversion) for scale, and their ratio; checks both give the same pixels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.common import machine
from vlkd.data import video as video_module
from vlkd.data.synth import VIDEOS_DIR, SynthConfig, generate
from vlkd.data.video import SamplingPlan, decode_video


class ScalerPerFrame:
    """The baseline's stand-in for `VideoReformatter`: every call sets up a new scaler, as `frame.reformat` does."""

    def reformat(self, frame: av.VideoFrame, **options) -> av.VideoFrame:
        return frame.reformat(**options)


def decode_only(path: Path) -> None:
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            pass


def cpu_ms_per_video(paths: list[Path], decode: Callable[[Path], Any]) -> tuple[float, Any]:
    """(CPU milliseconds per video, what decoding the last one returned)."""
    start, last = time.process_time(), None
    for path in paths:
        last = decode(path)
    return (time.process_time() - start) / len(paths) * 1000, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--size-2d", type=int, default=224)
    parser.add_argument("--size-3d", type=int, default=112)
    args = parser.parse_args()
    plan = SamplingPlan(size_2d=args.size_2d, size_3d=args.size_3d)
    kept_scaler = video_module.VideoReformatter
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(
            num_videos=args.videos,
            width=args.width,
            height=args.height,
            corpus_paragraphs=2,
            task_train_examples=2,
            task_dev_examples=2,
        )
        summary = generate(Path(tmp) / "synth", config)
        paths = sorted((Path(tmp) / "synth" / VIDEOS_DIR).glob("*.mp4"))
        outputs = {}
        rates: dict[str, list[float]] = {"decode alone": [], "scaler per frame": [], "scaler kept per size": []}
        for _ in range(3):
            rates["decode alone"].append(cpu_ms_per_video(paths, decode_only)[0])
            for name, scaler in (("scaler per frame", ScalerPerFrame), ("scaler kept per size", kept_scaler)):
                video_module.VideoReformatter = scaler
                try:
                    ms, outputs[name] = cpu_ms_per_video(paths, lambda path: decode_video(path, plan))
                finally:
                    video_module.VideoReformatter = kept_scaler
                rates[name].append(ms)
    same = all(
        np.array_equal(getattr(outputs["scaler per frame"], part), getattr(outputs["scaler kept per size"], part))
        for part in ("frames_2d", "clips_3d")
    )
    print(f"machine: {machine()}")
    print(
        f"{len(paths)} videos of {args.width}x{args.height} at 24 fps, {summary.video_seconds / len(paths):.1f} s "
        f"each; frames to {args.size_2d} px (2D) and {args.size_3d} px (3D); 3 rounds; CPU ms per video"
    )
    for name, values in rates.items():
        print(f"  {name:22s} " + "  ".join(f"{v:7.1f}" for v in values))
    base, new = min(rates["scaler per frame"]), min(rates["scaler kept per size"])
    print(f"ratio (best of each): {base / new:.2f}x less CPU per video; same pixels: {same}")


if __name__ == "__main__":
    main()
