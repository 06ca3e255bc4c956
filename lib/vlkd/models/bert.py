"""BERT configurations from vlkd's model shapes (the paper's LM^T, LM^S and V^T are all BERT-shaped)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlkd.specs.shapes import ModelShape

if TYPE_CHECKING:
    from transformers import BertConfig


def bert_config(shape: ModelShape, vocab_size: int, **extra: object) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        hidden_dropout_prob=shape.hidden_dropout,
        attention_probs_dropout_prob=shape.attention_dropout,
        **extra,
    )
