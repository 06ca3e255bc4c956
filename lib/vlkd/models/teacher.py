"""The teacher of Sec. 3.2: a language model LM^T (BERT with an MLM head) and a visual encoder V^T over frame
features, both trained from scratch.

V^T is BERT-shaped too: frame features are projected to the hidden size and fed as input embeddings, so they
get BERT's position embeddings, LayerNorm and encoder layers; the video representation is the mean of the
contextualised frame states over the valid frames.

`TeacherPretraining` is the teacher under its objectives, what the teacher stage trains: its forward computes every
loss term, so data parallelism and `torch.compile` see the whole step; it adds no parameters, so its weights are a
`Teacher`'s, key for key.

Saved layout: `language_model/` is a plain `save_pretrained` BertForMaskedLM directory (with the tokenizer files,
so `transformers` loads it alone), `video_encoder/` holds V^T's config and weights.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from vlkd import losses, masking
from vlkd.models.bert import (
    LANGUAGE_MODEL,
    PackedRows,
    bert_config,
    encoder_mask,
    save_language_model,
    stacked_packing,
    token_states,
)
from vlkd.specs.shapes import ModelShape

VIDEO_ENCODER = "video_encoder"
_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"


class VideoEncoder(nn.Module):
    """V^T: frame features [B, T, F] -> contextualised frame states [B, T, H] and a video vector [B, H]."""

    def __init__(self, feature_dim: int, shape: ModelShape) -> None:
        from transformers import BertModel

        super().__init__()
        self.feature_dim = feature_dim
        self.shape = shape
        self.project = nn.Linear(feature_dim, shape.hidden_size)
        # vocab_size=1: frames come in as input embeddings, so the word embeddings are never used. Frozen, so that
        # data parallelism waits for no gradient of theirs (DDP fails a step whose trained parameter got none).
        self.encoder = BertModel(bert_config(shape, vocab_size=1), add_pooling_layer=False)
        self.encoder.embeddings.word_embeddings.requires_grad_(False)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, T, F], mask [B, T] -> (states [B, T, H], video representation [B, H])."""
        # Features may come in another dtype than the weights (float16 from `clip_features`): cast on the device.
        embeddings = self.project(features.to(self.project.weight.dtype))
        mask_in = encoder_mask(self.encoder.config, mask.long())
        states = self.encoder(inputs_embeds=embeddings, attention_mask=mask_in).last_hidden_state
        return states, losses.mean_pool(states, mask)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        config = {"feature_dim": self.feature_dim, "shape": self.shape.model_dump(mode="json")}
        (directory / _CONFIG).write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / _WEIGHTS)

    @classmethod
    def load(cls, directory: Path) -> VideoEncoder:
        from safetensors.torch import load_file

        config = json.loads((directory / _CONFIG).read_text())
        encoder = cls(config["feature_dim"], ModelShape.model_validate(config["shape"]))
        encoder.load_state_dict(load_file(directory / _WEIGHTS))
        return encoder


class Teacher(nn.Module):
    """M^T = (LM^T, V^T): what retrieval and distillation read (`text_states`, `video_encoder`), and the artifact."""

    def __init__(self, language_model: nn.Module, video_encoder: VideoEncoder) -> None:
        super().__init__()
        self.language_model = language_model
        self.video_encoder = video_encoder

    @classmethod
    def build(cls, shape: ModelShape, video_shape: ModelShape, vocab_size: int, feature_dim: int) -> Teacher:
        from transformers import BertForMaskedLM

        return cls(BertForMaskedLM(bert_config(shape, vocab_size)), VideoEncoder(feature_dim, video_shape))

    def text_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, packing: PackedRows | None = None
    ) -> torch.Tensor:
        """Contextualised token states h^x [B, L, H] (LM^T without its MLM head), read packed with `packing`."""
        return token_states(self.language_model, input_ids, attention_mask, packing)

    def save(self, directory: Path, tokenizer_dir: Path | None = None) -> None:
        save_language_model(self.language_model, directory, tokenizer_dir)
        self.video_encoder.save(directory / VIDEO_ENCODER)

    @classmethod
    def load(cls, directory: Path) -> Teacher:
        from transformers import BertForMaskedLM

        language_model = BertForMaskedLM.from_pretrained(directory / LANGUAGE_MODEL, local_files_only=True)
        return cls(language_model, VideoEncoder.load(directory / VIDEO_ENCODER))


def reads_both_texts(objectives: Collection[str], contrastive_on_masked: bool) -> bool:
    """Whether LM^T reads two texts a step: the unmasked one for L_CT and the masked one for MLM (Sec. 3.2)."""
    return {"ct", "mlm"} <= set(objectives) and not contrastive_on_masked


class TeacherPretraining(Teacher):
    """M^T under L^T = sum_k w_k L_k (Sec. 3.2): the module the teacher stage trains. It takes over a teacher's
    LM^T and V^T (the same modules) and adds no parameters, so its state dict is the teacher's, key for key."""

    def __init__(self, teacher: Teacher, weights: dict[str, float], margin: float, contrastive_on_masked: bool) -> None:
        """`weights`: w_k of each objective trained (`ct`, `mlm`); `margin`: alpha of Eq. 3; `contrastive_on_masked`:
        L_CT reads the masked text (the authors' code) rather than the unmasked one (the paper)."""
        super().__init__(teacher.language_model, teacher.video_encoder)
        self.weights = dict(weights)
        self.margin = margin
        self.contrastive_on_masked = contrastive_on_masked

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        masked_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
        packing: PackedRows | None = None,
    ) -> dict[str, torch.Tensor]:
        """`loss` (L^T) and each trained term: `ct` (Eq. 3) of the text [B, L] with V^T's representation of
        `features` [B, T, F] (`frame_mask` [B, T]) against `negatives` (x' and v', [B] indices each); `mlm` of
        `masked_input_ids` [B, L], its head scoring [C] `mlm_positions` against `mlm_labels` [C] (`masking.Masking`),
        or every position against [B, L] labels when the positions are None. With `packing` (of the [B, L] text,
        `vlkd.data.packing`) LM^T reads the captions packed several to a row: the same states, fewer positions."""
        text, masked = self._text_states(input_ids, attention_mask, masked_input_ids, packing)
        terms: dict[str, torch.Tensor] = {}
        if "ct" in self.weights:
            video = self.video_encoder(features, frame_mask)[1]
            terms["ct"] = losses.token_contrastive_loss(text, attention_mask.bool(), video, *negatives, self.margin)
        if "mlm" in self.weights:
            logits = self.language_model.cls(masking.mlm_positions(masked, mlm_positions))
            terms["mlm"] = losses.mlm_loss(logits, mlm_labels)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def _text_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        masked_input_ids: torch.Tensor | None,
        packing: PackedRows | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the states L_CT reads, the states MLM reads), [B, L, H] each, from one LM pass. Two texts go through
        as one [2B, L] batch: the same per-row computation as two passes (dropout draws a mask per row either
        way), with half the kernel launches and full-width matrix products."""
        if "mlm" not in self.weights:
            return self.text_states(input_ids, attention_mask, packing), None
        if not reads_both_texts(self.weights, self.contrastive_on_masked):
            masked = self.text_states(masked_input_ids, attention_mask, packing)
            return masked, masked
        both_packed = None if packing is None else stacked_packing(packing, 2)
        both = self.text_states(torch.cat([input_ids, masked_input_ids]), attention_mask.repeat(2, 1), both_packed)
        text, masked = both.chunk(2)
        return text, masked
