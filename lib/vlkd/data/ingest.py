"""How a job's Ray Data pipelines run, set in one place for every stage that reads data through Ray Data."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vlkd.data.order import pass_order, spread, windows
from vlkd.data.row_groups import ShardTable
from vlkd.inputs import InputFile
from vlkd.specs import Resources

# Blocks are what the readers yield (a Parquet row group, a span of a video). Ray's default target (128 MiB) makes it
# gather several video spans (24 MB each at the paper's frame sizes) into one block before handing them on.
BLOCK_BYTES = 16 << 20


def configure_ray_data(resources: Resources) -> None:
    """Rows in input order (a seeded run sees the same batches every time; `SplitReader` draws the order), blocks as
    the readers yield them, and at most `resources.data_buffer` bytes of blocks in the object store ahead of the
    reader. Without the cap, Ray Data
    reads ahead until its share of the object store is full, so a job's memory grows with its data up to that share
    (30% of a node's RAM). No progress bars: a job's output is its log, not a terminal, where Ray Data writes a
    block of progress lines every few seconds of every execution (two thirds of a teacher's log); the job reports
    its own progress (`vlkd.joblog`)."""
    import ray.data  # sets up the "ray.data" logger: a file handler, and a console (stream) handler at INFO

    # The console, the job's log, gets Ray Data's warnings and errors, not its INFO lines: four for every execution
    # (its start, plan and end, and that another dataset logs meanwhile), and a training job runs one for every
    # validation and every pass over its split (half of the tiny teacher's log, thousands of lines in a long run).
    # They stay in Ray Data's log file (logs/ray-data in the Ray session's folder).
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.target_max_block_size = BLOCK_BYTES
    options = context.execution_options
    options.preserve_order = True
    options.resource_limits = options.resource_limits.copy(object_store_memory=resources.data_buffer_bytes)


ShardReader = Callable[[InputFile], Iterable[Any]]
"""A shard (its path, size and sha256, when known) -> its rows as Arrow tables (or dicts of numpy arrays), a batch at
a time."""


def shard_dataset(shards: Sequence[InputFile], read: ShardReader, resources: Resources, passes: int = 1) -> Any:
    """A Ray Data dataset of what `read` gives for each shard, in shard order (`passes` times over), read by at most
    `resources.read_tasks` tasks at once per training worker. Each task holds about one shard, so this and the
    data buffer bound the input path's memory; left to itself Ray Data runs a task per CPU and shard. Each row names
    its shard whole, sha256 included, so `read` needs no listing of the shards' artifact (`InputSource.unlisted`)."""
    import ray.data

    tasks = min(len(shards), resources.read_tasks * max(1, resources.num_workers))
    pool = ray.data.TaskPoolStrategy(size=max(1, tasks))
    rows = [{"path": s.path, "size": s.size, "sha256": s.sha256 or ""} for s in shards]
    paths = ray.data.from_items([row for _ in range(passes) for row in rows])
    return paths.map_batches(partial(_read_each, read=read), batch_size=1, compute=pool)


MIN_PASS_BATCHES = 200
"""Batches a worker trains on per pass over the training dataset, at least: each pass is a Ray Data execution
(an executor, read tasks, the first windows filling), about 0.1 s on a quiet 2-core CPU and seconds on a busy
one. A split of a few batches (a toy run's) would pay that every few steps."""


def passes_for(rows: int, batch_size: int, resources: Resources) -> int:
    """How many times one pass over the training dataset reads a split of `rows`: once when a worker gets at least
    MIN_PASS_BATCHES batches of it (any real corpus), else as often as that takes. Once also when a worker gets no
    whole batch, so training still stops with the short-shard error instead of batching repeats of a few rows."""
    batches = rows // (batch_size * max(1, resources.num_workers))
    return -(-MIN_PASS_BATCHES // batches) if batches else 1


def _read_each(batch: dict[str, Any], read: ShardReader) -> Iterator[Any]:
    for path, size, sha256 in zip(batch["path"], batch["size"], batch["sha256"], strict=True):
        yield from read(InputFile(str(path), int(size), str(sha256) or None))


GroupReader = Callable[[InputFile, list[int]], list[Any]]
"""(a shard (its path and size), row groups of it) -> each group's rows to train on as an Arrow table (after any
filter, so possibly fewer rows, or none), in the order asked."""

RowsPreparer = Callable[[Any], Any]
"""Row by row work on an Arrow table of a split's rows (a caption's tokenisation), done where the rows are read: in
Ray Data's read tasks, processes of their own, not in the training process that batches them."""

WHOLE_WINDOWS = 8
"""windows an epoch must give each worker before workers read whole windows: below it, one window more for some
workers than for others would leave a share an eighth or more short (every worker stops when one runs out)"""

WINDOW_SLICE = 256
"""rows per table a window is handed to Ray Data in (its blocks)"""


@dataclass(frozen=True)
class SplitReader:
    """A split of Parquet shards read as the paper's random minibatches (`vlkd.data.order`): each pass a new seeded
    order of its row groups, dealt to the training workers a window at a time, each window's rows spread out. Built
    on the driver and shipped to the workers, where `epoch` makes each worker's Ray Data dataset of its share."""

    shards: ShardTable
    """as the artifact lists them: a read task finds a shard's footer by its size"""
    groups: tuple[int, ...]
    """row groups of each shard"""
    group_rows: int
    """rows a row group holds (a shard's last may hold fewer)"""
    rows: int
    """rows a pass reads, after the row-group reader's filter"""
    read: GroupReader
    resources: Resources
    window: int
    """rows a read task mixes at once (`train.shuffle_window`): about `window // group_rows` row groups"""
    seed: int
    passes: int = 1
    """passes over the split per epoch (`passes_for`)"""

    @property
    def per_window(self) -> int:
        return max(1, self.window // self.group_rows)

    @property
    def empty(self) -> bool:
        return not sum(self.groups)

    def short_share(self, batch_size: int, world: int) -> str | None:
        """Why a worker of `world` would get no whole batch of a pass, or None. Exact while workers share windows
        (`items`: worker r keeps rows r, r + world, ...); with whole windows dealt, a worker's share can fall short
        of the mean, which training then reports (`vlkd.train_loop`). Checked on the driver, before any worker
        starts."""
        fewest, rank = min(((self.rows - r + world - 1) // world, r) for r in range(world))
        return short_share(fewest, rank, world, batch_size) if fewest < batch_size else None

    def epoch(self, epoch: int, rank: int = 0, world: int = 1, prepare: RowsPreparer | None = None) -> Any:
        """Worker `rank`'s Ray Data dataset for `epoch` (`items`), read by at most `resources.read_tasks` tasks at
        once, each holding one window and applying `prepare` to the rows it yields."""
        import ray.data

        items = self.items(epoch, rank, world)
        pool = ray.data.TaskPoolStrategy(size=max(1, min(len(items), self.resources.read_tasks)))
        return ray.data.from_items(items).map_batches(self.reader(prepare), batch_size=1, compute=pool)

    def items(self, epoch: int, rank: int = 0, world: int = 1) -> list[dict[str, Any]]:
        """The windows worker `rank` reads in `epoch` (passes `epoch * passes` on), each naming the shards it reads
        (`Window`). With at least `WHOLE_WINDOWS` windows a worker, window i of the epoch goes to worker i mod world
        whole (a paper-sized split: each window is read once); with fewer, every worker reads every window and keeps
        every world-th of its rows, so a small split still gives each worker an equal share."""
        count = sum(self.groups)
        drawn = [
            (index, w, groups)
            for index in range(epoch * self.passes, (epoch + 1) * self.passes)
            for w, groups in enumerate(windows(pass_order(count, self.seed, index), self.per_window))
        ]
        whole = len(drawn) >= WHOLE_WINDOWS * world
        keep, every = (0, 1) if whole else (rank, world)
        firsts = np.concatenate([[0], np.cumsum(self.groups)])  # the split's index of each shard's first row group
        return [
            vars(self._window(firsts, index, w, groups, keep, every))
            for index, w, groups in (drawn[rank::world] if whole else drawn)
        ]

    def _window(self, firsts: np.ndarray, index: int, window: int, groups: np.ndarray, keep: int, every: int) -> Window:
        shards = np.searchsorted(firsts[1:], groups, side="right")
        local = groups - firsts[shards]
        named, at = np.unique(shards, return_inverse=True)
        return Window(
            index,
            window,
            *self.shards.paths_and_sizes(named),
            at.tolist(),
            local.tolist(),
            keep,
            every,
        )

    def reader(self, prepare: RowsPreparer | None = None) -> Callable[[dict[str, Any]], Iterator[Any]]:
        """The read tasks' function: the split's `read` and seed, not its shards. Ray Data rebuilds a task's
        function in every task, and a paper-sized split's shards and their listing (530k features shards) took a
        read task 1.4 s to load before it read a row; each window names its own shards instead."""
        return partial(_read_windows, read=self.read, seed=self.seed, prepare=prepare)


@dataclass(frozen=True)
class Window:
    """A window of a pass: its row groups, each a shard (an index into `paths`) and a row group of it, and which of
    its rows a worker keeps (every `every`-th from the `keep`-th on)."""

    index: int
    """the pass"""
    window: int
    paths: list[str]
    sizes: list[int]
    shard: list[int]
    group: list[int]
    keep: int = 0
    every: int = 1

    def rows(self, read: GroupReader, seed: int) -> Iterator[Any]:
        """The window's rows, spread (`vlkd.data.order.spread`, seeded by pass and window), as Arrow tables."""
        import pyarrow as pa

        places = list(zip(self.shard, self.group, strict=True))
        wanted: dict[int, list[int]] = {}  # shard -> its row groups in the window: read together
        for shard, group in places:
            wanted.setdefault(shard, []).append(group)
        tables = {
            (shard, group): table
            for shard, local in wanted.items()
            for group, table in zip(local, read(InputFile(self.paths[shard], self.sizes[shard]), local), strict=True)
        }
        parts = [tables[place] for place in places]
        rng = np.random.default_rng([seed, self.index, self.window])
        order = spread([t.num_rows for t in parts], rng)[self.keep :: self.every]
        # One contiguous table first: a `take` from a table of many chunks joins them all again on every call.
        rows = pa.concat_tables(parts).combine_chunks()
        for start in range(0, len(order), WINDOW_SLICE):
            yield rows.take(order[start : start + WINDOW_SLICE])


def short_share(rows: int, rank: int, world: int, batch_size: int) -> str:
    """The error for worker `rank`'s share of `rows`, fewer than a batch: every worker stops when one has none."""
    whose = f"worker {rank}'s shard has" if world > 1 else "the training split has"
    fix = "lower resources.num_workers or train.batch_size" if world > 1 else "lower train.batch_size"
    return f"{whose} {rows} rows, fewer than train.batch_size {batch_size}: {fix}"


def _read_windows(batch: dict[str, Any], read: GroupReader, seed: int, prepare: RowsPreparer | None) -> Iterator[Any]:
    for values in zip(*(batch[f.name] for f in dataclasses.fields(Window)), strict=True):
        window = Window(*(np.asarray(v).tolist() for v in values))  # Ray Data's numpy values, as Python's
        for rows in window.rows(read, seed):
            yield rows if prepare is None else prepare(rows)
