"""The teacher of Sec. 3.2: a language model LM^T (BERT with an MLM head) and a visual encoder V^T over frame
features, both trained from scratch.

V^T is BERT-shaped too: frame features are projected to the hidden size and fed as input embeddings, so they
get BERT's position embeddings, LayerNorm and encoder layers; the video representation is the mean of the
contextualised frame states over the valid frames.

Saved layout: `language_model/` is a plain `save_pretrained` BertForMaskedLM directory (with the tokenizer files,
so `transformers` loads it alone), `video_encoder/` holds V^T's config and weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vlkd.losses import mean_pool
from vlkd.models.bert import LANGUAGE_MODEL, bert_config, save_language_model, token_states
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
        # vocab_size=1: the word embeddings are never used, frames come in as input embeddings
        self.encoder = BertModel(bert_config(shape, vocab_size=1), add_pooling_layer=False)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, T, F], mask [B, T] -> (states [B, T, H], video representation [B, H])."""
        states = self.encoder(inputs_embeds=self.project(features), attention_mask=mask.long()).last_hidden_state
        return states, mean_pool(states, mask)

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
    """M^T = (LM^T, V^T)."""

    def __init__(self, language_model: nn.Module, video_encoder: VideoEncoder) -> None:
        super().__init__()
        self.language_model = language_model
        self.video_encoder = video_encoder

    @classmethod
    def build(cls, shape: ModelShape, video_shape: ModelShape, vocab_size: int, feature_dim: int) -> Teacher:
        from transformers import BertForMaskedLM

        return cls(BertForMaskedLM(bert_config(shape, vocab_size)), VideoEncoder(feature_dim, video_shape))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        masked_input_ids: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        contrastive_on_masked: bool = False,
    ) -> dict[str, torch.Tensor]:
        """One forward for what the objectives need (DDP sees every trained parameter through it):
        `text_states` [B, L, H] and `video_repr` [B, H] when features are given (L_CT), `mlm_logits` [B, L, V] of
        the masked text when it is given (L_MLM). The text states are of the unmasked text, or, with
        `contrastive_on_masked`, of the masked one, so that a single LM pass serves both terms."""
        out: dict[str, torch.Tensor] = {}
        masked_states = None
        if masked_input_ids is not None:
            masked_states = self.text_states(masked_input_ids, attention_mask)
            out["mlm_logits"] = self.language_model.cls(masked_states)
        if features is not None and frame_mask is not None:
            shared = contrastive_on_masked and masked_states is not None
            out["text_states"] = masked_states if shared else self.text_states(input_ids, attention_mask)
            out["video_repr"] = self.video_encoder(features, frame_mask)[1]
        return out

    def text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Contextualised token states h^x [B, L, H] (LM^T without its MLM head)."""
        return token_states(self.language_model, input_ids, attention_mask)

    def save(self, directory: Path, tokenizer_dir: Path | None = None) -> None:
        save_language_model(self.language_model, directory, tokenizer_dir)
        self.video_encoder.save(directory / VIDEO_ENCODER)

    @classmethod
    def load(cls, directory: Path) -> Teacher:
        from transformers import BertForMaskedLM

        language_model = BertForMaskedLM.from_pretrained(directory / LANGUAGE_MODEL, local_files_only=True)
        return cls(language_model, VideoEncoder.load(directory / VIDEO_ENCODER))
