"""The teacher as a student's distillation sees it (Sec. 3.4): LM^T frozen, inference only, and for the voken
objective (Eq. 9) V^T's representations of a bank of pre-selected videos, built once per job."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlkd.artifacts import ArtifactStore
from vlkd.models.bert import shape_of, token_states
from vlkd.refs import ArtifactRef

BANK_BATCH = 256


class FrozenTeacher(nn.Module):
    """LM^T (and, for vokens, V^T's video bank) as the student sees it: inference only."""

    def __init__(self, language_model: nn.Module, video_bank: torch.Tensor | None = None) -> None:
        super().__init__()
        self.language_model = language_model
        self.video_bank = video_bank
        self.shape = shape_of(language_model.config)
        """LM^T's shape, from its config: what its FLOPs are counted from, at every step"""

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (last hidden states [B, L, D_t], logits [B, L, V] or None) in fp32. The MLM head's vocabulary
        projection is a fifth of a BERT-base forward: it runs only for the objectives that read logits."""
        hidden = token_states(self.language_model, input_ids, attention_mask)
        scores = self.language_model.cls(hidden).float() if logits else None
        return hidden.float(), scores


@dataclass(frozen=True)
class VideoBank:
    """Eq. 9's pre-selected videos: a seeded sample of whole videos of a features artifact, given to V^T as its
    training gave it frames (its spec's `max_frames` and `visual_input`)."""

    features: str
    videos: tuple[str, ...]
    max_frames: int
    middle_frame: bool
    """image-level supervision (Table 6): V^T reads the middle frame's 2D features only"""


def load_frozen_teacher(
    store: ArtifactStore, ref: ArtifactRef, device: torch.device, bank: VideoBank | None, compile: str | None = None
) -> FrozenTeacher:
    """The teacher on `device`, frozen; `compile` (the spec's `TrainSpec.compile_mode`, which the loop applies to
    the student) compiles its forward too, as large as the student's, in the same mode."""
    from vlkd.models.teacher import Teacher

    with tempfile.TemporaryDirectory(prefix="vlkd-teacher-") as tmp:
        store.fetch(ref, Path(tmp))
        teacher = Teacher.load(Path(tmp))
    teacher.eval().requires_grad_(False).to(device)
    if device.type == "cuda":  # the frozen teacher needs no fp32 master weights
        teacher.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    bank_vectors = _shared_video_bank(teacher.video_encoder, store, bank, device) if bank else None
    frozen = FrozenTeacher(teacher.language_model, bank_vectors)
    if compile:
        frozen.compile(mode=compile)  # in place (`nn.Module.compile`): the teacher keeps its type and attributes
    return frozen


def _shared_video_bank(encoder: nn.Module, store: ArtifactStore, bank: VideoBank, device: torch.device) -> torch.Tensor:
    """The bank, built once per job: with several training workers rank 0 reads and encodes, the others receive
    it (every rank asks at its first step, so the broadcast lines up)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return video_bank(encoder, store, bank, device)
    if dist.get_rank() == 0:
        built = video_bank(encoder, store, bank, device)
    else:
        built = torch.empty(len(bank.videos), encoder.shape.hidden_size, device=device)
    dist.broadcast(built, src=0)
    return built


@torch.no_grad()
def video_bank(encoder: nn.Module, store: ArtifactStore, bank: VideoBank, device: torch.device) -> torch.Tensor:
    """-> [K, H]: each bank video's representation, the mean of V^T's representations of its clips. Only the
    shards holding those videos are read, one at a time, and clips are encoded `BANK_BATCH` at a time, so memory
    holds the bank and one shard whatever the size of the features."""
    from vlkd.data import features as fmt
    from vlkd.data.clips import features_info, frames_of, shards_holding
    from vlkd.inputs import open_input

    source = open_input(bank.features, store)
    info = features_info(source)
    row = {video_id: i for i, video_id in enumerate(bank.videos)}
    sums = torch.zeros(len(row), encoder.shape.hidden_size, device=device)
    counts = torch.zeros(len(row), device=device)
    dtype = next(encoder.parameters()).dtype
    pending: list[tuple[int, np.ndarray]] = []

    def encode() -> None:
        padded, mask = frames_of([f for _, f in pending], bank.max_frames, encoder.feature_dim, bank.middle_frame)
        frames = torch.from_numpy(padded).to(device, dtype)
        reprs = encoder(frames, torch.from_numpy(mask).to(device))[1].float()
        rows = torch.tensor([i for i, _ in pending], device=device)
        sums.index_add_(0, rows, reprs)
        counts.index_add_(0, rows, torch.ones(len(rows), device=device))
        pending.clear()

    for path in shards_holding(source, info, frozenset(row)):
        for clip in fmt.read_clips(source.read_bytes(path), info.feature_dim):
            if clip.video_id in row:
                pending.append((row[clip.video_id], clip.features))
                if len(pending) == BANK_BATCH:
                    encode()
    if pending:
        encode()
    return sums / counts.clamp(min=1)[:, None]
