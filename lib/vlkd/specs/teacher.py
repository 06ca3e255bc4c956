"""Spec of the teacher stage: cross-modal pretraining of LM^T and V^T (Sec. 3.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from vlkd.errors import VlkdError
from vlkd.specs.base import FeaturesRef, StageSpec, StrictModel, TokenizerRef
from vlkd.specs.shapes import ModelShape
from vlkd.specs.training import OptimSpec, TrainSpec

if TYPE_CHECKING:
    from vlkd.artifacts import Manifest

TeacherObjective = Literal["ct", "mlm"]


class TeacherLossWeights(StrictModel):
    """L^T = w_ct L_CT + w_mlm L_MLM; the paper uses 1 and 1 (footnote 2: other weights changed little)."""

    ct: float = Field(1.0, ge=0)
    mlm: float = Field(1.0, ge=0)


class TeacherSpec(StageSpec):
    stage: Literal["teacher"] = "teacher"
    outputs: ClassVar[tuple[str, ...]] = ("teacher",)

    features: FeaturesRef
    tokenizer: TokenizerRef
    model: ModelShape = Field(default_factory=ModelShape, description="LM^T")
    video_model: ModelShape | None = Field(
        None, description="V^T over frame features; default: the same shape as model"
    )
    objectives: list[TeacherObjective] = Field(
        ["ct", "mlm"], min_length=1, description="Table 3 ablates [ct], [mlm] and [ct, mlm]"
    )
    loss_weights: TeacherLossWeights = TeacherLossWeights()
    margin: float = Field(1.0, gt=0, description="hinge margin alpha of Eq. 3 (Sec. 4.3)")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    contrastive_text: Literal["unmasked", "masked"] = Field(
        "unmasked",
        description="what LM^T reads for L_CT: the unmasked text x, as Sec. 3.2 writes it (LM^T reads both texts), "
        "or x^masked, as the authors' released teacher does (one pass shared with MLM)",
    )
    visual_input: Literal["video", "middle_frame"] = Field(
        "video", description="middle_frame: image-level supervision, the middle frame's 2D feature (Table 6)"
    )
    max_text_len: int = Field(128, gt=2, description="Sec. 4.3")
    max_frames: int = Field(512, gt=0, description="Sec. 4.3")
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec()

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> TeacherSpec:
        if self.video_model is None:
            self.video_model = self.model.model_copy()
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: {self.objectives} lists an objective twice")
        return self


def trained_with(manifest: Manifest) -> TeacherSpec:
    """The spec a teacher artifact was trained with, which its manifest keeps: what reads the teacher's video
    encoder (retrieval, the voken bank) must give it the frames it was trained on."""
    if manifest.spec is None:
        raise VlkdError(f"{manifest.ref} carries no spec: was it made by the teacher stage?")
    return TeacherSpec.model_validate(manifest.spec)
