"""Spec of the student stage: distilling the frozen teacher into a student LM (Sec. 3.3-3.4)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, model_validator

from vlkd.specs.base import CorpusRef, FeaturesRef, ModelRef, StageSpec, StrictModel, TeacherRef
from vlkd.specs.shapes import ModelShape
from vlkd.specs.training import OptimSpec, TrainSpec

KDObjective = Literal["soft_label", "regression", "nst", "nst_poly", "crd", "crd_nt_xent", "voken"]


class NSTOptions(StrictModel):
    sigma: float = Field(1.0, gt=0, description="Gaussian kernel width (Eq. 7)")
    normalize: bool = Field(True, description="L2-normalise each neuron's activations first, as NST does")


class CRDOptions(StrictModel):
    dim: int = Field(128, gt=0, description="shared embedding size of f1, f2 (Eq. 8)")
    temperature: float = Field(0.07, gt=0)
    buffer_size: int = Field(
        16384, gt=0, description="memory of past teacher embeddings (bounded; the paper keeps one per sample)"
    )
    num_negatives: int = Field(16384, gt=0, description="negatives per example drawn from the buffer")
    level: Literal["sentence", "token"] = Field(
        "sentence",
        description="what is contrasted: mean-pooled sentence vectors, or every valid token (the paper's KD uses "
        "all hidden states, Sec. 3.4), its positive the teacher's state at its position, the buffer then holding "
        "teacher token embeddings",
    )


class CRDNTXentOptions(StrictModel):
    temperature: float = Field(1.0, gt=0, description="the authors' code passes 1.0 (zinengtang/VidLanKD vlm/model.py)")


class SoftLabelOptions(StrictModel):
    tau: float = Field(2.0, gt=0, description="softmax temperature (Sec. 3.4)")


class VokenOptions(StrictModel):
    features: FeaturesRef | None = Field(None, description="features the video bank is built from")
    bank_size: int = Field(
        30_000,
        gt=0,
        description="pre-selected videos (30K in the paper, Sec. 3.4): a seeded sample of whole videos, each "
        "represented by the mean of V^T over its clips",
    )


class KDOptions(StrictModel):
    nst: NSTOptions = NSTOptions()
    crd: CRDOptions = CRDOptions()
    crd_nt_xent: CRDNTXentOptions = CRDNTXentOptions()
    soft_label: SoftLabelOptions = SoftLabelOptions()
    voken: VokenOptions = VokenOptions()


class DistillTrainSpec(TrainSpec):
    """A student's training: a fixed budget by default, so the last weights are published and a student and its
    baseline compare at equal steps (the teacher trains "until it converges", Sec. 4.3)."""

    patience: int | None = Field(
        None, gt=0, description="stop after this many evaluations without improvement; null trains to max_steps"
    )


class DistillSpec(StageSpec):
    """`kd` weights the KD objectives added to MLM (Eq. 4); `kd: {}` is the text-only baseline."""

    stage: Literal["distill"] = "distill"
    outputs: ClassVar[tuple[str, ...]] = ("student",)

    teacher: TeacherRef | None = Field(None, description="required unless kd is empty")
    corpus: CorpusRef
    model: ModelShape = Field(default_factory=ModelShape, description="LM^S")
    init: ModelRef | None = Field(
        None,
        description="the weights LM^S starts from: a teacher's language model (Table 4's two-stage pretraining: "
        "video, then text) or a student's, of the same shape and vocabulary; default: random (Sec. 3.3, from scratch)",
    )
    kd: dict[KDObjective, PositiveFloat] = Field({"nst": 1.0, "crd": 1.0}, description="NST+CRD (Eq. 4)")
    kd_options: KDOptions = KDOptions()
    distill_head: bool = Field(True, description="two-layer MLP on the student's last states (Sec. 4.3)")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    max_len: int = Field(128, gt=2, description="Sec. 4.3")
    optim: OptimSpec = OptimSpec()
    train: DistillTrainSpec = DistillTrainSpec()

    @model_validator(mode="after")
    def _teacher_when_distilling(self) -> DistillSpec:
        if self.kd and self.teacher is None:
            raise ValueError(f"teacher: required to distill with {', '.join(self.kd)} (or set kd: {{}})")
        if "voken" in self.kd and self.kd_options.voken.features is None:
            raise ValueError("kd_options.voken.features: required for the voken objective (the video bank)")
        return self
