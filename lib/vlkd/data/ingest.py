"""How a job's Ray Data pipelines run, set in one place for every stage that reads data through Ray Data."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from vlkd.specs import Resources

# Blocks are what the readers yield (a Parquet row group, a span of a video). Ray's default target (128 MiB) makes it
# gather several video spans (24 MB each at the paper's frame sizes) into one block before handing them on.
BLOCK_BYTES = 16 << 20


def configure_ray_data(resources: Resources) -> None:
    """Rows in input order (a seeded run sees the same batches every time), blocks as the readers yield them, and at
    most `resources.data_buffer` bytes of blocks in the object store ahead of the reader. Without the cap, Ray Data
    reads ahead until its share of the object store is full, so a job's memory grows with its data up to that share
    (30% of a node's RAM)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.target_max_block_size = BLOCK_BYTES
    options = context.execution_options
    options.preserve_order = True
    options.resource_limits = options.resource_limits.copy(object_store_memory=resources.data_buffer_bytes)


ShardReader = Callable[[str], Iterable[Any]]
"""A shard's path -> its rows as Arrow tables (or dicts of numpy arrays), a batch at a time."""


def shard_dataset(shards: Sequence[str], read: ShardReader, resources: Resources, passes: int = 1) -> Any:
    """A Ray Data dataset of what `read` gives for each shard, in shard order (`passes` times over), read by at most
    `resources.read_tasks` tasks at once per training worker. Each task holds about one shard, so this and the
    data buffer bound the input path's memory; left to itself Ray Data runs a task per CPU and shard."""
    import ray.data

    tasks = min(len(shards), resources.read_tasks * max(1, resources.num_workers))
    pool = ray.data.TaskPoolStrategy(size=max(1, tasks))
    paths = ray.data.from_items([{"path": path} for _ in range(passes) for path in shards])
    return paths.map_batches(partial(_read_each, read=read), batch_size=1, compute=pool)


MIN_PASS_BATCHES = 200
"""Batches a worker trains on per pass over the training dataset, at least: each pass is a Ray Data execution
(an executor, read tasks, a shuffle buffer filling up), about 0.1 s on a quiet 2-core CPU and seconds on a busy
one. A split of a few batches (a toy run's) would pay that every few steps."""


def passes_for(rows: int, batch_size: int, resources: Resources) -> int:
    """How many times one pass over the training dataset reads a split of `rows`: once when a worker gets at least
    MIN_PASS_BATCHES batches of it (any real corpus), else as often as that takes. Once also when a worker gets no
    whole batch, so training still stops with the short-shard error instead of batching repeats of a few rows."""
    batches = rows // (batch_size * max(1, resources.num_workers))
    return -(-MIN_PASS_BATCHES // batches) if batches else 1


def _read_each(batch: dict[str, Any], read: ShardReader) -> Iterator[Any]:
    for path in batch["path"]:
        yield from read(str(path))
