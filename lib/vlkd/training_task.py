"""What a stage gives the shared training loop (`TrainingTask`: its model, collate, loss and evaluation), and the
validation losses every task's evaluation starts from."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pyarrow as pa
import torch
from torch import nn

from vlkd.worker_batches import examples_in


class TrainingTask(Protocol):
    """What a stage gives the loop. Built on the driver and shipped to every worker, so keep it light (specs,
    refs, a tokenizer); the model is built on the worker. A task may also have `loss_and_probes`: `loss` plus
    measurements too costly for every step (a term's gradient norm), which the loop calls instead on the last
    micro-batch of each logged step, with the model outside `torch.compile` (`vlkd.model_wrappers.eager`), and
    logs as measured; and
    `prepare_rows` (`vlkd.data.ingest.RowsPreparer`): the row by row part of its collate, which the loop has the
    Ray Data read tasks do, so the training process's threads (and its GIL, which the step's own Python needs)
    only batch and pad."""

    def build_model(self) -> nn.Module: ...

    def collate(self, batch: pa.Table) -> dict[str, Any]:
        """A Ray Data batch (an Arrow table of rows `prepare_rows` gave, where the task has it) -> CPU tensors for
        `loss` (Ray's prefetch threads move them to the device)."""

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and each term's value for logging, detached, on the device: the loop reads them on the steps
        it logs only, so no step waits for the GPU to report a number."""

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Validation metrics: `validation_losses` (`val_loss`, which early stopping watches) and the task's own."""

    def tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        """Tokens in a batch, for throughput: a count on the device, read when the loop logs."""

    def flops(self, batch: dict[str, Any]) -> float:
        """The FLOPs one micro-step on `batch` runs, forward and backward (`vlkd.flops`: the achieved count), from
        the batch's shapes alone: the host knows it without asking the GPU."""


def validation_losses(
    task: TrainingTask,
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    each: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """The mean over validation batches of each term `task.loss` reports, as `val_<term>`; `val_loss` (the total)
    is inf without a batch. Masks and negatives are drawn from one fixed seed, so successive evaluations compare.
    A batch of one example is left out, as training drops it (no in-batch negative); `each`, given every batch,
    measures what losses do not (the teacher's retrieval)."""
    generator = torch.Generator().manual_seed(0)
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        if each is not None:
            each(batch)
        if examples_in(batch) > 1:
            _, terms = task.loss(model, batch, generator)
            sums = {k: sums.get(k, 0.0) + float(v) for k, v in terms.items()}
            count += 1
    metrics = {f"val_{k}": v / max(count, 1) for k, v in sums.items()}
    metrics["val_loss"] = metrics.pop("val_loss", math.inf)
    return metrics
