"""The batches a training worker steps on: its share of a split (`vlkd.data.ingest.SplitReader.epoch`), collated
and moved to its device in Ray's background threads, and, across workers, only while every one of them has a
batch (DDP's collectives need every rank at every step).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

if TYPE_CHECKING:
    from vlkd.training_task import TrainingTask


def _collate_fn(task: TrainingTask) -> Any:
    """A task's `collate` as Ray Data's collate function: it gets the Arrow batch itself and runs in Ray's prefetch
    threads, which then pin the tensors and copy them to the device without blocking, so the step never waits."""
    from ray.data.collate_fn import ArrowBatchCollateFn

    class Collate(ArrowBatchCollateFn):
        def __call__(self, batch: pa.Table) -> dict[str, Any]:
            return task.collate(batch)

    return Collate()


def train_batches(
    dataset: Any, task: TrainingTask, batch_size: int, device: torch.device, prefetch: int, drop_last: bool
) -> Iterable[dict[str, Any]]:
    """Collated batches of a worker's Ray Data dataset (`SplitReader.epoch`) on `device`, in the order it reads
    (already drawn across the split); training drops the last incomplete batch (a batch of one has no in-batch
    negative), validation keeps it. `prefetch` batches are made ahead in background threads."""
    return dataset.iter_torch_batches(
        batch_size=batch_size,
        collate_fn=_collate_fn(task),
        device=device,
        pin_memory=device.type == "cuda",
        prefetch_batches=prefetch,
        drop_last=drop_last,
    )


def host_group() -> Any:
    """A process group of every training worker whose collectives run on the host (gloo), made by every rank at
    once; None where the default group is one already. NCCL reduces on the GPU, in its queue: reading the result
    (`.item()`) waits for every kernel queued before it, a drained queue once a step."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def while_every_rank_has_one(batches: Iterable[Any], group: Any) -> Iterator[Any]:
    """`batches` while every worker of `group` (`host_group`) has one: DDP's collectives need every rank at every
    step, and workers' shares of an epoch differ by a few rows (held-out clips filtered out of their row groups, a
    shard's short last group), where a shared Ray Data split would cut every share to the shortest. A flag is
    reduced per batch on the host, so the step does not wait for the GPU."""
    import torch.distributed as dist

    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        every = torch.tensor([batch is not None], dtype=torch.int32)
        dist.all_reduce(every, op=dist.ReduceOp.MIN, group=group)
        if not every.item():
            return
        yield batch


def examples_in(batch: dict[str, Any]) -> int:
    """Examples in a collated batch: the length of its first tensor."""
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))
