"""How training draws its batches, against the stored order it replaced, on features shaped like HowTo100M.

    python -m bench.batch_order [--videos 60] [--clips 100] [--frames 4] [--batch 32] [--cpus 8] [--repeat 2]

Features of `--videos` videos of `--clips` clips each (random 2560-d frames, `--frames` a clip: HowTo100M's clips
last about 4 s), stored as preprocessing writes them: a video's clips together, in shards of 256 clips and row groups
of 32. Two readers of the training split (`train.val_size` 10 videos' worth held out), in the same process:
- before: the shards in order, a row group at a time, through Ray Data's local shuffle buffer of 4 batches (what
  `vlkd.train` read until issue 31);
- now: `vlkd.data.ingest.SplitReader` (`vlkd.data.order`: a seeded order of row groups per pass, windows of
  `train.shuffle_window` rows spread out).
For each: the share of (anchor, other example) pairs of a batch from one video (the expected share of L_CT's
negatives from the anchor's own video), videos per batch, and clips/s delivered after the first batch; and the
exact values of a uniform shuffle of the split.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Iterable, Iterator
from functools import partial
from math import prod
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from bench.common import machine
from bench.inputs import Inputs
from vlkd.artifacts import ArtifactStore
from vlkd.data.clips import clip_datasets, features_info, held_out
from vlkd.data.ingest import configure_ray_data, passes_for, shard_dataset
from vlkd.inputs import InputFile, InputSource, open_input
from vlkd.specs import Resources, TrainSpec


def _stored_rows(shard: InputFile, source: InputSource, held: frozenset[str]) -> Iterator[pa.Table]:
    """The reader before: a shard's row groups in order, held-out clips left out."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    held_ids = pa.array(sorted(held), pa.string())
    for batch in pq.ParquetFile(io.BytesIO(source.read_bytes(shard.path))).iter_batches(batch_size=32):
        kept = batch.filter(pc.invert(pc.is_in(batch.column("video_id"), value_set=held_ids)))
        if kept.num_rows:
            yield pa.Table.from_batches([kept.select(["video_id", "features"])])


def measure(batches: Iterable[pa.Table]) -> tuple[float, float, float]:
    """(same-video pair share, videos per batch, clips/s after the first batch)."""
    iterator = iter(batches)
    first = next(iterator)
    videos = [first.column("video_id").to_numpy(zero_copy_only=False)]
    start = time.perf_counter()
    videos += [b.column("video_id").to_numpy(zero_copy_only=False) for b in iterator]
    seconds = time.perf_counter() - start
    same = pairs = 0
    for batch in videos:
        _, counts = np.unique(batch, return_counts=True)
        same += int((counts * (counts - 1)).sum())
        pairs += len(batch) * (len(batch) - 1)
    rate = sum(len(v) for v in videos[1:]) / seconds
    return same / pairs, float(np.mean([len(np.unique(v)) for v in videos])), rate


def uniform(counts: list[int], batch: int) -> tuple[float, float]:
    """A uniform shuffle's same-video pair share and expected videos in a batch drawn without replacement."""
    total = sum(counts)
    share = sum(n * (n - 1) for n in counts) / (total * (total - 1))
    return share, sum(1 - prod((total - n - i) / (total - i) for i in range(batch)) for n in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--clips", type=int, default=100, help="clips a video (HowTo100M: 111 on average)")
    parser.add_argument("--frames", type=int, default=4, help="frames a clip")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=8, help="logical CPUs of the local Ray")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each reader, alternating")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    window, val_size = TrainSpec().shuffle_window, 10 * args.clips
    with tempfile.TemporaryDirectory(prefix="vlkd-batch-order-") as tmp:
        store = ArtifactStore.open(Path(tmp, "store").as_uri())
        inputs = Inputs(store, Path(tmp))
        inputs.tokenizer()
        inputs.features("howto", args.videos * args.clips, args.frames, clips_per_video=args.clips)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            resources = Resources(num_workers=0)
            configure_ray_data(resources)
            source = open_input("features/howto", store)
            info = features_info(source)
            held = held_out(source, info, val_size, 0).videos
            train_clips = args.videos * args.clips - len(held) * args.clips
            passes = passes_for(train_clips, args.batch, resources)
            readers = {
                "before": lambda: shard_dataset(
                    [source.file(s) for s in info.shards],
                    partial(_stored_rows, source=source, held=held),
                    resources,
                    passes,
                ).iter_batches(
                    batch_size=args.batch,
                    batch_format="pyarrow",
                    local_shuffle_buffer_size=4 * args.batch,
                    local_shuffle_seed=0,
                    drop_last=True,
                ),
                "now": lambda: (
                    clip_datasets(store, "features/howto", val_size, 0, resources, args.batch, window)[0]["train"]
                    .epoch(0)
                    .iter_batches(batch_size=args.batch, batch_format="pyarrow", drop_last=True)
                ),
            }
            share, videos = uniform([args.clips] * (args.videos - len(held)), args.batch)
            print(
                f"{args.videos} videos x {args.clips} clips ({train_clips} training clips, {passes} passes an epoch), "
                f"{args.frames} frames a clip, batch {args.batch}, shuffle_window {window}; uniform shuffle: "
                f"{100 * share:.2f}% same-video, {videos:.1f} videos a batch"
            )
            for run in range(args.repeat):
                for name, reader in readers.items():
                    same, per_batch, rate = measure(reader())
                    print(
                        f"run {run + 1} {name:<7} same-video {100 * same:6.2f}%  videos a batch {per_batch:5.1f}  "
                        f"{rate:8.0f} clips/s",
                        flush=True,
                    )
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
