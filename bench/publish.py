"""preprocess's publish (the driver cutting cached video features into caption clips and uploading the shards) with
store requests kept in flight (`vlkd.overlap`) against one at a time, on a store that answers each request after a
fixed latency.

    python -m bench.publish [--videos 200] [--latency-ms 20] [--rounds 2]

A file store whose every request (read, write, upload) first waits `--latency-ms`, the first-byte latency of S3 in
a region (10-50 ms for small objects), so that what is measured is what a request in flight hides, not this machine's
disk. The run cache holds `--videos` videos of 4 spans of 32 features at the paper's dim (2,560: 160 KB a span, as
the encoders write them), 30 captions each; shards of 256 clips. "one at a time": `PUBLISH_READS` 1 and one shard
upload in flight; "in flight": the defaults (32 videos read ahead, 4 uploads). Both publish the same files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine
from vlkd.artifacts import ArtifactStore
from vlkd.data.caption_ranges import CaptionRanges, count_captions
from vlkd.data.captions import Caption, dump_captions
from vlkd.data.features import FeaturesWriter, PartCache
from vlkd.data.skipped import SkippedInputs
from vlkd.jobs import preprocess
from vlkd.runtime import JobContext
from vlkd.specs import parse_spec
from vlkd.storage import open_storage

SPANS, SPAN_FEATURES, DIM, CAPTIONS = 4, 32, 2560, 30


class Latent:
    """A storage whose every request waits `seconds` first, as a remote store's round trip does."""

    def __init__(self, storage: Any, seconds: float) -> None:
        self._storage = storage
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._storage, name)
        if name not in ("read_bytes", "read_range", "write_bytes", "upload", "download", "size", "exists"):
            return attribute

        def delayed(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._seconds)
            return attribute(*args, **kwargs)

        return delayed


def cached_videos(root: Path, videos: int) -> tuple[PartCache, dict[str, preprocess.VideoInput], CaptionRanges]:
    """A run cache of `videos` encoded videos and their captions, spilled as `plan_inputs` spills them."""
    cache = PartCache(open_storage(root.as_uri()), "cache/preprocess/bench")
    rng = np.random.default_rng(0)
    captions, usable = [], {}
    for number in range(videos):
        video_id = f"howto_{number:06d}"
        for span in range(SPANS):
            cache.write_span(video_id, "tag", span, rng.standard_normal((SPAN_FEATURES, DIM)).astype(np.float16))
        cache.write_end(video_id, "tag", SPANS, SPANS * SPAN_FEATURES)
        usable[video_id] = preprocess.VideoInput(video_id, f"{video_id}.mp4", "tag")
        captions += [Caption(video_id, 4.0 * i, 4.0 * i + 3.5, f"step {i} of video {number}") for i in range(CAPTIONS)]
    lines = dump_captions(captions).splitlines()
    return cache, usable, CaptionRanges.spill(lines, count_captions(lines, print), root / "ranges")


def publish(root: Path, cache: PartCache, inputs: preprocess.Inputs, latency: float, name: str) -> tuple[float, Any]:
    store = ArtifactStore(Latent(open_storage(root.as_uri()), latency))
    latent_cache = PartCache(store.storage, cache.prefix)
    spec = parse_spec(
        {
            "stage": "preprocess",
            "name": name,
            "videos": "dataset/videos",
            "encoder_2d": {"name": "clip-vit-b32", "init": "random"},
            "encoder_3d": {"name": "resnext3d", "init": "random"},
            "span_features": SPAN_FEATURES,
        }
    )
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-publish-") as scratch:
        context = JobContext(f"bench-{name}", store, Path(scratch))
        started = time.perf_counter()
        manifest = preprocess.publish(
            spec, context, inputs, (latent_cache, cache.completed()), [], "bench", {"reused_videos": 0, "seconds": 1}
        )
        return time.perf_counter() - started, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{machine()}; {args.videos} videos, {args.latency_ms:g} ms a request")
    forms = {"one at a time": (1, 1), "in flight": (preprocess.PUBLISH_READS, FeaturesWriter.UPLOADS)}
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-store-") as root:
        cache, usable, ranges = cached_videos(Path(root), args.videos)
        files: dict[str, set] = {}
        for round_ in range(args.rounds):
            seconds = {}
            for form, (reads, uploads) in forms.items():
                preprocess.PUBLISH_READS, FeaturesWriter.UPLOADS = reads, uploads
                skipped = SkippedInputs(Path(root) / "skipped.jsonl")
                inputs = preprocess.Inputs(usable, ranges, skipped)
                name = f"{form.replace(' ', '-')}-{round_}"
                seconds[form], manifest = publish(Path(root), cache, inputs, args.latency_ms / 1000, name)
                files[form] = {(f.path, f.sha256) for f in manifest.files if f.path.startswith("shards/")}
                print(f"  {form}: {seconds[form]:.1f} s, {args.videos / seconds[form]:.1f} videos/s")
            assert files["one at a time"] == files["in flight"], "the two forms published different shards"
            print(f"  ratio: {seconds['one at a time'] / seconds['in flight']:.1f}x")


if __name__ == "__main__":
    main()
