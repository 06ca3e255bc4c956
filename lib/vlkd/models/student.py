"""The student of Sec. 3.3: a language model LM^S (BERT with an MLM head, trained from scratch) with a two-layer
MLP distillation head on its last hidden states (Sec. 4.3), plus the trainable parts some KD objectives bring
(CRD's projections and memory, the voken classifier).

Saved layout: `language_model/` is a plain `save_pretrained` BertForMaskedLM directory with the tokenizer files
(what downstream finetuning loads); `kd_heads/` keeps the distillation head and objective modules with their
config, for continuing or inspecting a distillation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vlkd.models.bert import bert_config
from vlkd.specs.shapes import ModelShape

LANGUAGE_MODEL = "language_model"
KD_HEADS = "kd_heads"


class DistillationHead(nn.Module):
    """Two-layer MLP with ReLU on the student's last hidden states (Sec. 4.3), mapping to the teacher's width."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(student_dim, student_dim), nn.ReLU(), nn.Linear(student_dim, teacher_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden)


class Student(nn.Module):
    """M^S: LM^S and the modules its distillation trains alongside (`objectives`, keyed by KD objective name)."""

    def __init__(self, language_model: nn.Module, head: nn.Module | None, objectives: dict[str, nn.Module]) -> None:
        super().__init__()
        self.language_model = language_model
        self.head = head
        self.objectives = nn.ModuleDict(objectives)

    @classmethod
    def build(
        cls, shape: ModelShape, vocab_size: int, head_to: int | None, objectives: dict[str, nn.Module]
    ) -> Student:
        """`head_to`: the teacher's width for the distillation head, or None for no head."""
        from transformers import BertForMaskedLM

        head = DistillationHead(shape.hidden_size, head_to) if head_to is not None else None
        return cls(BertForMaskedLM(bert_config(shape, vocab_size)), head, objectives)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """`logits` [B, L, V] of the MLM head, `hidden` [B, L, D_s] (last layer) and `kd` [B, L, D], what the KD
        objectives compare with the teacher (the head's output, or the hidden states without a head). Given the
        teacher's states [B, L, D_t], the objective modules run here too (so data parallelism sees every trained
        parameter in the forward): `crd` (Eq. 8's loss) and `voken_logits` [B, L, K]."""
        from vlkd.losses import mean_pool

        out = self.language_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        result = {"logits": out.logits, "hidden": hidden, "kd": self.head(hidden) if self.head is not None else hidden}
        if teacher_hidden is not None and "crd" in self.objectives:
            mask = attention_mask.bool()
            result["crd"] = self.objectives["crd"](
                mean_pool(result["kd"], mask), mean_pool(teacher_hidden, mask), generator
            )
        if "voken" in self.objectives:
            result["voken_logits"] = self.objectives["voken"](result["kd"])
        return result

    def save(self, directory: Path, tokenizer_dir: Path, description: dict) -> None:
        from safetensors.torch import save_file

        language_dir = directory / LANGUAGE_MODEL
        self.language_model.save_pretrained(language_dir)
        for path in tokenizer_dir.iterdir():
            if path.is_file() and not (language_dir / path.name).exists():
                (language_dir / path.name).write_bytes(path.read_bytes())
        extra = {k: v for k, v in self.state_dict().items() if not k.startswith("language_model.")}
        if extra:
            (directory / KD_HEADS).mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in extra.items()}, directory / KD_HEADS / "model.safetensors")
            (directory / KD_HEADS / "config.json").write_text(json.dumps(description, indent=2))
