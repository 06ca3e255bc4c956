"""Batches for finetuning and prediction: token lists padded to the batch's longest, never to `max_len`, so
short tasks cost short sequences on a CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

Feature = dict[str, Any]
"""Model inputs of one example: token lists ([L], or [C, L] per choice) and int labels."""


def collate(features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack features into tensors: ints -> [B]; token lists -> [B, L] or [B, C, L], padded with `pad_id` for
    input_ids and 0 (masked, segment A) for the rest."""
    batch = {}
    for key in features[0]:
        values = [feature[key] for feature in features]
        if isinstance(values[0], int):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = _pad(values, pad_id if key == "input_ids" else 0)
    return batch


def _pad(values: list[list[Any]], pad: int) -> torch.Tensor:
    nested = isinstance(values[0][0], list)
    rows = [row for value in values for row in value] if nested else values
    width = max(len(row) for row in rows)
    padded = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    return padded.view(len(values), -1, width) if nested else padded


def predict_batches(
    model: nn.Module, features: list[Feature], batch_size: int, device: str, pad_id: int
) -> Iterator[Any]:
    """The model's outputs on `features`, in order, batch by batch, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size], pad_id)
            yield model(**{key: value.to(device) for key, value in batch.items()})
