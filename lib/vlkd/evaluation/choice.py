"""Multiple-choice heads (SWAG, PIQA): each choice is encoded as `[CLS] context [SEP] choice [SEP]` and
BertForMultipleChoice scores them with one shared linear layer, softmax over the choices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlkd.evaluation.batches import Feature, predict_batches
from vlkd.evaluation.readers import MultipleChoice
from vlkd.evaluation.tasks import Task

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase


def build_model(model_dir: Path, task: Task) -> tuple[nn.Module, dict[str, Any]]:
    from transformers import BertForMultipleChoice

    return BertForMultipleChoice.from_pretrained(model_dir, output_loading_info=True)


def encode(
    tokenizer: PreTrainedTokenizerBase, examples: list[MultipleChoice], task: Task, max_len: int, labels: bool = True
) -> list[Feature]:
    """One feature per example: token lists [C, L] (C choices) and, with `labels`, the right choice's index."""
    contexts = [e.context for e in examples for _ in e.endings]
    endings = [ending for e in examples for ending in e.endings]
    encoded = tokenizer(contexts, endings, truncation=True, max_length=max_len)
    features, row = [], 0
    for example in examples:
        rows = slice(row, row + len(example.endings))
        row = rows.stop
        feature = {key: encoded[key][rows] for key in ("input_ids", "token_type_ids", "attention_mask")}
        features.append({**feature, "labels": example.label} if labels else feature)
    return features


def predict(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[MultipleChoice],
    task: Task,
    max_len: int,
    batch_size: int,
    device: str,
) -> list[int]:
    """The index of the highest-scoring choice of each example."""
    features = encode(tokenizer, examples, task, max_len, labels=False)
    predicted = []
    for output in predict_batches(model, features, batch_size, device, tokenizer.pad_token_id):
        predicted += output.logits.argmax(dim=-1).tolist()
    return predicted
