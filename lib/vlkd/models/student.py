"""The student of Sec. 3.3: a language model LM^S (BERT with an MLM head, trained from scratch) with a two-layer
MLP distillation head on its last hidden states (Sec. 4.3). What its KD objectives compare and train alongside it
lives with them (`vlkd.distillation`).

Saved layout: `language_model/` is a plain `save_pretrained` BertForMaskedLM directory with the tokenizer files
(what downstream finetuning loads).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlkd import masking
from vlkd.models.bert import bert_config, save_language_model, token_states
from vlkd.specs.shapes import ModelShape


class DistillationHead(nn.Module):
    """Two-layer MLP with ReLU on the student's last hidden states (Sec. 4.3), mapping to the teacher's width."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(student_dim, student_dim), nn.ReLU(), nn.Linear(student_dim, teacher_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden)


class Student(nn.Module):
    """M^S: LM^S and, when it distils through one, the distillation head."""

    def __init__(self, language_model: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.language_model = language_model
        self.head = head

    @classmethod
    def build(cls, shape: ModelShape, vocab_size: int, head_to: int | None) -> Student:
        """`head_to`: the teacher's width for the distillation head, or None for no head."""
        from transformers import BertForMaskedLM

        head = DistillationHead(shape.hidden_size, head_to) if head_to is not None else None
        return cls(BertForMaskedLM(bert_config(shape, vocab_size)), head)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """`logits` of the MLM head, `hidden` [B, L, D_s] (last layer) and `kd` [B, L, D], what the KD objectives
        compare with the teacher (the head's output, or the hidden states without a head). The logits are [C, V]
        at `positions` (`vlkd.masking.Masking.positions`: the head and its vocabulary projection run where MLM
        scores only, NVIDIA's BERT `dense_seq_output`), or [B, L, V] at every position when None."""
        hidden = token_states(self.language_model, input_ids, attention_mask)
        kd = self.head(hidden) if self.head is not None else hidden
        logits = self.language_model.cls(masking.mlm_positions(hidden, positions))
        return {"logits": logits, "hidden": hidden, "kd": kd}

    def save(self, directory: Path, tokenizer_dir: Path) -> None:
        """The LM, as downstream finetuning loads it; the head is saved with the objectives' modules."""
        save_language_model(self.language_model, directory, tokenizer_dir)
