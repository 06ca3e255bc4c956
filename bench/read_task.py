"""What a training read task loads before it reads a row, for a paper-sized features artifact: the function it is
shipped now (`SplitReader.reader`: the split's row-group reader and seed; each window names its own shards) against
before (the whole `SplitReader`, its shards and the artifact's listing).

    python -m bench.read_task [--shards 530000] [--rounds 3]

HowTo100M's 136M clips make about 530k shards of 256 clips (8 row groups each); the held-out videos' ids travel with
the reader (2,000 here). Ray Data rebuilds a task's function in every task, so each form is pickled as Ray ships it
(cloudpickle) and loaded in a fresh interpreter: its bytes, the seconds to load it and the process's PSS after it.
Also what a training worker pays at the start of an epoch to draw its windows (`SplitReader.items`, rank 0 of 8).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from functools import partial
from typing import Any

import cloudpickle

from bench.common import machine
from vlkd.data.clips import _clip_groups
from vlkd.data.ingest import SplitReader
from vlkd.data.row_groups import shard_files
from vlkd.inputs import InputFile, InputSource
from vlkd.specs import Resources
from vlkd.storage import open_storage

WORKER = """
import json, pickle, sys, time
shipped = sys.stdin.buffer.read()
seconds = []
for _ in range(2):  # the first load imports vlkd's modules, once a worker; the second is what every task pays
    held = None
    started = time.perf_counter()
    held = pickle.loads(shipped)
    seconds.append(time.perf_counter() - started)
memory = dict(line.split(":") for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
print(json.dumps({"first_s": seconds[0], "task_s": seconds[1], "pss_mb": int(memory["Pss"].split()[0]) / 1024}))
"""


def paper_split(shards: int) -> tuple[SplitReader, SplitReader]:
    """A features split of `shards` listed shards as `clip_datasets` builds it, and as it was built before: its
    reader held the artifact's listed source."""
    paths = [f"shards/shard-{i:07d}.parquet" for i in range(shards)]
    known = {p: InputFile(p, 6_000_000 + i, f"{i:064x}") for i, p in enumerate(paths)}
    source = InputSource(open_storage("file:///tmp"), "features/howto/v1/files", "features/howto:v1", None, known)
    held = frozenset(f"video-{i:08d}" for i in range(2000))
    read = partial(_clip_groups, source=source.unlisted(), held=held, inside=False)
    split = SplitReader(shard_files(source, paths), (8,) * shards, 32, 256 * shards, read, Resources(), 4096, 0)
    return split, dataclasses.replace(split, read=partial(_clip_groups, source=source, held=held, inside=False))


def splits(split: SplitReader) -> dict[str, bytes]:
    """The split as each training worker gets it (once, with the TorchTrainer's config): its shards as a
    `ShardTable`, and as a tuple of `InputFile`s (before)."""
    return {
        "the split a worker gets, shards as InputFiles (before)": cloudpickle.dumps(
            dataclasses.replace(split, shards=tuple(split.shards))
        ),
        "the split a worker gets, shards as a ShardTable (now)": cloudpickle.dumps(split),
    }


def loaded(shipped: bytes) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", WORKER], input=shipped, capture_output=True, check=True)
    return {"mb": len(shipped) / 1e6, **json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=530_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    split, before = paper_split(args.shards)
    forms = {
        "the split, listed (before)": cloudpickle.dumps(before),
        "SplitReader.reader (now)": cloudpickle.dumps(split.reader()),
    }
    print(f"{machine()}; {args.shards:,} shards")
    for _ in range(args.rounds):
        for name, shipped in {**forms, **splits(split)}.items():
            cost = loaded(shipped)
            print(
                f"  {name}: {cost['mb']:.2f} MB; loads in {cost['task_s']:.4f} s a task "
                f"({cost['first_s']:.2f} s the worker's first); PSS {cost['pss_mb']:.0f} MB"
            )
    started = time.perf_counter()
    items = split.items(0, 0, 8)
    seconds = time.perf_counter() - started
    size = len(cloudpickle.dumps(items)) / 1e6
    print(f"  a worker's windows of an epoch: {len(items)} in {seconds:.2f} s, {size:.1f} MB pickled")


if __name__ == "__main__":
    main()
