"""Sentence (pair) classification heads: GLUE tasks, TRACIE, and MNLI's model scoring GLUE's diagnostic."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlkd.evaluation.batches import Feature, predict_batches
from vlkd.evaluation.readers import TextPair
from vlkd.evaluation.tasks import Task

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase


def build_model(model_dir: Path, task: Task) -> tuple[nn.Module, dict[str, Any]]:
    """BertForSequenceClassification on the pretrained encoder, with a new head over the task's labels (and
    transformers' loading info)."""
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(task.labels),
        id2label=dict(enumerate(task.labels)),
        label2id={label: index for index, label in enumerate(task.labels)},
        output_loading_info=True,
    )


def encode(
    tokenizer: PreTrainedTokenizerBase, pairs: list[TextPair], task: Task, max_len: int, labels: bool = True
) -> list[Feature]:
    """`[CLS] a [SEP] (b [SEP])`, cut to `max_len` by trimming the longer text first; with `labels`, each
    label's index in the task's vocabulary."""
    texts_b = [p.text_b for p in pairs] if pairs[0].text_b is not None else None
    encoded = tokenizer([p.text_a for p in pairs], texts_b, truncation=True, max_length=max_len)
    index = {label: i for i, label in enumerate(task.labels)}
    features = []
    for i, pair in enumerate(pairs):
        feature = {key: encoded[key][i] for key in ("input_ids", "token_type_ids", "attention_mask")}
        features.append({**feature, "labels": index[pair.label]} if labels else feature)
    return features


def predict(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[TextPair],
    task: Task,
    max_len: int,
    batch_size: int,
    device: str,
) -> list[str]:
    """The most likely label of each pair."""
    features = encode(tokenizer, pairs, task, max_len, labels=False)
    predicted = []
    for output in predict_batches(model, features, batch_size, device, tokenizer.pad_token_id):
        predicted += [task.labels[i] for i in output.logits.argmax(dim=-1).tolist()]
    return predicted
