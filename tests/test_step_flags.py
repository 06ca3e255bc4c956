"""Workers whose shares of an epoch differ by a few batches stop together, agreeing on the host
(`vlkd.worker_batches`)."""

from __future__ import annotations

import socket

import pytest


def _free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def _share(rank: int, port: int, counts: list[int], seen: dict) -> None:
    import os

    import torch.distributed as dist

    from vlkd.worker_batches import host_group, while_every_rank_has_one

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(counts))
    try:
        group = host_group()
        batches = [{"rank": rank, "index": i} for i in range(counts[rank])]
        seen[rank] = (group is None, list(while_every_rank_has_one(batches, group)))
        # The group still works for the next epoch's shares, whichever rank stopped early.
        seen[rank + len(counts)] = len(list(while_every_rank_has_one(batches[:1], group)))
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("counts", [[3, 5], [4, 0], [2, 2]])
def test_workers_train_on_as_many_batches_as_the_shortest_share_holds(counts):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        seen = manager.dict()
        mp.spawn(_share, args=(_free_port(), counts, seen), nprocs=len(counts))
        seen = dict(seen)
    fewest = min(counts)
    for rank in range(len(counts)):
        default_group, batches = seen[rank]
        assert default_group  # gloo already reduces on the host: no second group is made
        assert batches == [{"rank": rank, "index": i} for i in range(fewest)]
        assert seen[rank + len(counts)] == min(1, fewest)
