"""BERT configurations from vlkd's model shapes (the paper's LM^T, LM^S and V^T are all BERT-shaped), and where
teacher and student artifacts keep their language model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlkd.specs.shapes import ModelShape

if TYPE_CHECKING:
    import torch
    from transformers import BertConfig, BertForMaskedLM, PretrainedConfig, PreTrainedModel

LANGUAGE_MODEL = "language_model"
"""The folder of a teacher or student artifact that holds its LM as a `save_pretrained` BertForMaskedLM with the
tokenizer files: what downstream finetuning loads, and `transformers` alone can."""


SHAPE_FIELDS = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
"""The BertConfig fields that make a checkpoint's weights fit a model, with `ModelShape`'s name for each."""


def shape_fields(shape: ModelShape) -> dict[str, int]:
    """`shape` as those BertConfig fields: what `bert_config` builds a model with, and an init checkpoint's config is
    checked against."""
    return {key: getattr(shape, field) for key, field in SHAPE_FIELDS.items()}


def bert_config(shape: ModelShape, vocab_size: int, **extra: object) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        **shape_fields(shape),
        hidden_dropout_prob=shape.hidden_dropout,
        attention_probs_dropout_prob=shape.attention_dropout,
        **extra,
    )


def shape_of(config: PretrainedConfig) -> ModelShape:
    """The shape of a saved BERT (e.g. a teacher's LM^T), from its config: what its FLOPs are counted from."""
    return ModelShape(**{field: getattr(config, key) for key, field in SHAPE_FIELDS.items()})


PackedRows = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]
"""A `vlkd.data.packing.Packing` as tensors on the device: (gather, scatter, positions, segments)"""


def token_states(
    language_model: BertForMaskedLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    packing: PackedRows | None = None,
) -> torch.Tensor:
    """The last layer's token states [B, L, H] of a BertForMaskedLM, from its encoder alone; `language_model.cls`
    of them are its MLM logits. Teacher and student read their states this way: asking the model for its hidden
    states instead installs output hooks on every layer at every call (host time each step, and a graph break
    under torch.compile). With `packing` the encoder reads the sequences packed several to a row (`packed_states`);
    the states at padded positions are then zeros, which no loss reads."""
    if packing is not None:
        return packed_states(language_model, input_ids, packing)
    mask = encoder_mask(language_model.config, attention_mask)
    return language_model.bert(input_ids=input_ids, attention_mask=mask).last_hidden_state


def packed_states(language_model: BertForMaskedLM, input_ids: torch.Tensor, packing: PackedRows) -> torch.Tensor:
    """`token_states` of the padded batch `input_ids` [B, L] computed over its packed rows [R, L]: each sequence
    attends to itself only and is numbered from 0, as alone, and its states are put back at its padded places."""
    import torch.nn.functional as F

    gather, scatter, positions, segments = packing
    flat = F.pad(input_ids.reshape(-1), (0, 1))  # an empty slot reads token 0; its state is never read back
    same = segments[:, None, :, None] == segments[:, None, None, :]  # [R, 1, L, L]: block-diagonal
    mask = same if language_model.config._attn_implementation == "sdpa" else _additive(same)
    states = language_model.bert(input_ids=flat[gather], attention_mask=mask, position_ids=positions)
    rows = states.last_hidden_state.flatten(0, 1)
    return F.pad(rows, (0, 0, 0, 1))[scatter]  # padding reads the zero row added last


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask as the additive one non-SDPA attention adds to its scores."""
    import torch

    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)


def stacked_packing(packing: PackedRows, copies: int) -> PackedRows:
    """The packing of `copies` batches stacked ([copies * B, L]: the text and its masked form, read in one pass)
    from the packing of one: each copy's rows after the last's, its indices shifted past them."""
    import torch

    gather, scatter, positions, segments = packing
    batch, length = scatter.shape
    rows = gather.shape[0]
    tokens, slots = batch * length, rows * length
    return (
        torch.cat([torch.where(gather == tokens, copies * tokens, gather + k * tokens) for k in range(copies)]),
        torch.cat([torch.where(scatter == slots, copies * slots, scatter + k * slots) for k in range(copies)]),
        positions.repeat(copies, 1),
        torch.cat([torch.where(segments < 0, segments, segments + k * batch) for k in range(copies)]),
    )


def encoder_mask(config: PretrainedConfig, mask: torch.Tensor) -> torch.Tensor:
    """A padding mask [B, L] as a BERT encoder should get it: under SDPA, as SDPA's own boolean mask [B, 1, 1, L],
    which transformers passes on as it is. Given the 2D mask, it would ask whether any token is padded
    (`mask.all()`, a wait for the GPU at every eager forward) to drop the mask when none is."""
    return mask.bool()[:, None, None, :] if config._attn_implementation == "sdpa" else mask


def save_language_model(language_model: PreTrainedModel, directory: Path, tokenizer_dir: Path | None) -> None:
    """Write `language_model` into `directory/LANGUAGE_MODEL`, with the tokenizer files of `tokenizer_dir`."""
    language_dir = directory / LANGUAGE_MODEL
    language_model.save_pretrained(language_dir)
    if tokenizer_dir is not None:
        for path in tokenizer_dir.iterdir():
            if path.is_file() and not (language_dir / path.name).exists():
                (language_dir / path.name).write_bytes(path.read_bytes())


def randomize_language_model(language_dir: Path, seed: int) -> None:
    """Replace the weights of a saved language model with a random init of its architecture, drawn from `seed`:
    the no-pretraining baseline of Table 2, which shares its tokenizer and shape with the pretrained models. A
    finetuning seed draws its own init, so the seeds' spread covers the init's luck as it covers the head's."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig.from_pretrained(language_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertForMaskedLM(config).save_pretrained(language_dir)
