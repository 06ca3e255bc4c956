"""The KD objectives of Sec. 3.4, registered by name, and the student as distillation trains it.

L^S = L_MLM + sum_k w_k L_k over the objectives the spec lists (Eq. 4 for `{nst: 1, crd: 1}`). Every objective
compares the student's KD output (the distillation head's, or its last hidden states without a head) or its
logits with the teacher's, over all valid positions of the same masked input. Each is defined once, in
`KD_OBJECTIVES`: its loss (from `vlkd.losses`), what it reads, and the trainable module it brings, if any.
`gradient_norms` and `kd_balance` measure how much each term steers the student (the manifest's `kd_balance`).

Saved layout, beside the student's: `kd_heads/` keeps the distillation head and the objectives' modules with their
config, for continuing or inspecting a distillation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlkd import losses, masking
from vlkd.flops import linear_forward_flops
from vlkd.models.student import Student
from vlkd.specs import KDOptions
from vlkd.specs.shapes import ModelShape

KD_HEADS = "kd_heads"


@dataclass
class KDBatch:
    """What the objectives read for one batch."""

    student: dict[str, torch.Tensor]
    """`logits` and `kd` [B, L, D] from `Student.forward`; the logits are [B, L, V], every position's, whenever
    an objective reads them (`USES_LOGITS`)"""
    teacher_hidden: torch.Tensor
    """[B, L, D_t], the frozen teacher's last hidden states"""
    teacher_logits: torch.Tensor | None
    """[B, L, V], only for the objectives in `USES_LOGITS`"""
    mask: torch.Tensor
    """[B, L], true at valid tokens"""
    vokens: torch.Tensor | None = None
    """[B, L] voken labels (Eq. 9), when the voken objective is on"""
    generator: torch.Generator | None = None
    """CRD's draws of negatives, on the batch's device"""


@dataclass(frozen=True)
class Widths:
    """What the objectives' modules are sized by."""

    kd: int
    """the student's KD output"""
    teacher: int
    """the teacher's hidden states"""
    num_data: int
    """training sequences (M of Eq. 8)"""
    bank_size: int
    """videos in the voken bank (Eq. 9)"""


@dataclass(frozen=True)
class KDObjective:
    """One objective of Sec. 3.4."""

    loss: Callable[[KDBatch, KDOptions, nn.Module | None], torch.Tensor]
    """(batch, options, the objective's module or None) -> scalar"""
    reads_head: bool = True
    """compares the distillation head's output; soft labels reuse the LM head instead (Sec. 3.4)"""
    reads_logits: bool = False
    """compares the teacher's MLM logits"""
    module: Callable[[KDOptions, Widths], nn.Module] | None = None
    """the trainable module the objective brings, trained with the student"""
    same_width: bool = False
    """compares the KD output with the teacher's states vector by vector, so they need one width"""
    flops: Callable[[KDOptions, Widths, int, int], float] | None = None
    """(options, widths, batch, length) -> the forward FLOPs of its matrix products on a [batch, length] batch
    (`vlkd.flops`'s achieved count); None for an objective of elementwise work only"""


def _crd_memory(options: KDOptions, widths: Widths) -> nn.Module:
    """CRD's f1, f2 and memory of teacher embeddings (Eq. 8)."""
    crd = options.crd
    return losses.CRDLoss(
        widths.kd, widths.teacher, crd.dim, crd.temperature, crd.buffer_size, crd.num_negatives, widths.num_data
    )


def _crd(batch: KDBatch, options: KDOptions, module: nn.Module | None) -> torch.Tensor:
    """Eq. 8 between the student's KD outputs and the teacher's hidden states, at `kd_options.crd.level`: each
    sentence's means over its valid tokens, or every valid token (the paper's "all hidden states", Sec. 3.4) with
    the teacher's state at its position as its positive and past teacher tokens in the memory as negatives.
    Padded tokens are left out of both the loss and the memory. M (`num_data`) stays the number of sequences at
    the token level: through CRD's normalising constant it cancels from h, so it need not count tokens. Costs of
    the token level: each of a batch's valid tokens scores the whole memory (at 128 sentences of 128 tokens and
    the default 16,384 entries, a [16384, 16384] score matrix, 1 GiB in fp32), the default memory holds about one
    batch's tokens, and selecting the valid tokens gives a shape only the mask knows: one wait for the GPU per
    step, and a graph break under torch.compile."""
    student, teacher = batch.student["kd"], batch.teacher_hidden
    if options.crd.level == "token":
        return module(student[batch.mask], teacher[batch.mask], batch.generator)
    return module(losses.mean_pool(student, batch.mask), losses.mean_pool(teacher, batch.mask), batch.generator)


def _crd_flops(options: KDOptions, widths: Widths, batch: int, length: int) -> float:
    """f1 and f2 on every anchor, and each anchor's scores with the whole memory (once it holds entries); at the
    token level every position is counted as an anchor, padded ones included (the host knows no more)."""
    crd = options.crd
    rows = batch * length if crd.level == "token" else batch
    projections = linear_forward_flops(rows, widths.kd, crd.dim) + linear_forward_flops(rows, widths.teacher, crd.dim)
    return projections + 2.0 * rows * crd.buffer_size * crd.dim


KD_OBJECTIVES: dict[str, KDObjective] = {
    "soft_label": KDObjective(
        lambda b, o, _: losses.soft_label_loss(b.student["logits"], b.teacher_logits, b.mask, o.soft_label.tau),
        reads_head=False,
        reads_logits=True,
    ),
    "regression": KDObjective(
        lambda b, o, _: losses.regression_loss(b.student["kd"], b.teacher_hidden, b.mask), same_width=True
    ),
    "nst": KDObjective(  # the kernels between the neurons: student-student, teacher-teacher, student-teacher
        lambda b, o, _: losses.nst_loss(b.student["kd"], b.teacher_hidden, b.mask, o.nst.sigma, o.nst.normalize),
        flops=lambda o, w, batch, length: 2.0 * batch * length * (w.kd**2 + w.teacher**2 + w.kd * w.teacher),
    ),
    "nst_poly": KDObjective(
        lambda b, o, _: losses.nst_poly_loss(b.student["kd"], b.teacher_hidden, b.mask),
        flops=lambda o, w, batch, length: 2.0 * batch * length * (w.kd**2 + w.kd * w.teacher),
    ),
    "crd": KDObjective(_crd, module=_crd_memory, flops=_crd_flops),
    "crd_nt_xent": KDObjective(  # at each position, the scores of the 2B vectors with each other
        lambda b, o, _: losses.crd_nt_xent_loss(b.student["kd"], b.teacher_hidden, b.mask, o.crd_nt_xent.temperature),
        same_width=True,
        flops=lambda o, w, batch, length: 2.0 * length * (2 * batch) ** 2 * w.kd,
    ),
    "voken": KDObjective(  # the classifier, and the vokens' assignment from the teacher's states
        lambda b, o, classifier: losses.voken_loss(classifier(b.student["kd"]), b.vokens, b.mask),
        module=lambda o, widths: nn.Linear(widths.kd, widths.bank_size),
        flops=lambda o, w, batch, length: 2.0 * batch * length * w.bank_size * (w.kd + w.teacher),
    ),
}


def objectives_forward_flops(
    kd: dict[str, float], options: KDOptions, widths: Widths, batch: int, length: int
) -> float:
    """The forward FLOPs of the matrix products of the objectives in `kd` on a [batch, length] batch."""
    chosen = [o.flops for name, o in KD_OBJECTIVES.items() if name in kd and o.flops is not None]
    return sum(flops(options, widths, batch, length) for flops in chosen)


USES_HEAD = frozenset(name for name, objective in KD_OBJECTIVES.items() if objective.reads_head)
USES_LOGITS = frozenset(name for name, objective in KD_OBJECTIVES.items() if objective.reads_logits)
SAME_WIDTH = frozenset(name for name, objective in KD_OBJECTIVES.items() if objective.same_width)


class Distillation(nn.Module):
    """M^S with the modules its objectives train (CRD's projections and memory, the voken classifier): the one
    module the training loop trains, and data parallelism wraps. Its forward runs the student and computes every
    loss term, so DDP sees each trained parameter used inside the forward it wraps."""

    def __init__(self, student: Student, kd: dict[str, float], options: KDOptions, modules: dict[str, nn.Module]):
        super().__init__()
        self.student = student
        self.objectives = nn.ModuleDict(modules)
        self.kd = dict(kd)
        self.options = options
        self.full_head = bool(USES_LOGITS & set(kd))
        """the MLM head runs at every position, whatever `positions` says: an objective reads all its logits"""

    @classmethod
    def build(
        cls, shape: ModelShape, vocab_size: int, kd: dict[str, float], options: KDOptions, widths: Widths, head: bool
    ) -> Distillation:
        """A new student (with a distillation head to `widths.kd` when `head`) and its objectives' modules."""
        objectives = {name: KD_OBJECTIVES[name] for name in KD_OBJECTIVES if name in kd}
        modules = {name: o.module(options, widths) for name, o in objectives.items() if o.module is not None}
        return cls(Student.build(shape, vocab_size, widths.kd if head else None), kd, options, modules)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        vokens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss terms of a masked batch: `mlm` and, given the teacher's states of the same input [B, L, D_t]
        (and its logits, and vokens, for the objectives that read them), each KD objective's; and the student's
        last hidden states [B, L, D_s], where every term's gradient passes (`gradient_norms`).

        `labels` are the MLM labels at `positions` [C] (`vlkd.masking.Masking`), where the MLM head then runs
        alone, or at every position [B, L] when `positions` is None. With an objective that reads every logit
        (`full_head`) the head runs everywhere and MLM reads its rows at `positions`: the same loss either way."""
        scored = None if self.full_head else positions
        student = self.student(input_ids, attention_mask, scored)
        logits = student["logits"] if scored is not None else masking.mlm_positions(student["logits"], positions)
        terms = {"mlm": losses.mlm_loss(logits, labels)}
        if teacher_hidden is None:
            return terms, student["hidden"]
        batch = KDBatch(student, teacher_hidden, teacher_logits, attention_mask.bool(), vokens, generator)
        modules = dict(self.objectives.items())
        for name in self.kd:
            terms[name] = KD_OBJECTIVES[name].loss(batch, self.options, modules.get(name))
        return terms, student["hidden"]

    def save(self, directory: Path, tokenizer_dir: Path, description: dict) -> None:
        """The student's LM (`Student.save`), and in `kd_heads/` what else distillation trained, with `description`."""
        from safetensors.torch import save_file

        self.student.save(directory, tokenizer_dir)
        extra = {
            name.removeprefix("student."): value.contiguous()
            for name, value in self.state_dict().items()
            if not name.startswith("student.language_model.")
        }
        if extra:
            (directory / KD_HEADS).mkdir(parents=True, exist_ok=True)
            save_file(extra, directory / KD_HEADS / "model.safetensors")
            (directory / KD_HEADS / "config.json").write_text(json.dumps(description, indent=2))


def term_weights(kd: dict[str, float]) -> dict[str, float]:
    """Each term's weight in Eq. 4: L_MLM's 1, then the KD objectives'."""
    return {"mlm": 1.0, **kd}


def weighted_total(terms: dict[str, torch.Tensor], kd: dict[str, float]) -> torch.Tensor:
    """L^S = L_MLM + sum_k w_k L_k (Eq. 4)."""
    weights = term_weights(kd)
    return sum((weight * terms[name] for name, weight in weights.items()), torch.zeros_like(terms["mlm"]))


GRADIENT_NORM = "hidden_grad_norm/"
"""The prefix of a term's logged gradient norm at the student's last hidden states (`gradient_norms`)."""


def gradient_norms(terms: dict[str, torch.Tensor], hidden: torch.Tensor, kd: dict[str, float]) -> dict[str, float]:
    """For each term w_k L_k of Eq. 4, the L2 norm of its gradient at the student's last hidden states `hidden`
    [B, L, D_s]: the one tensor every term's gradient passes through (MLM and soft labels through the LM head, the
    others through the distillation head), so the norms say which term steers the student. `torch.autograd.grad`
    keeps the graph for the step's own backward and leaves the parameters' gradients alone."""
    norms = {}
    for name, weight in term_weights(kd).items():
        (gradient,) = torch.autograd.grad(weight * terms[name], hidden, retain_graph=True)
        norms[f"{GRADIENT_NORM}{name}"] = float(gradient.float().norm())
    return norms


def kd_balance(first: dict[str, float], last: dict[str, float], kd: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per term of Eq. 4: `loss`, w_k L_k over the last logged window of steps (its mean), and `grad_norm`, its
    `gradient_norms` on the last micro-batch of that window (rank 0's, under data parallelism); `loss_init` and
    `grad_norm_init` alike at the first logged step, near the initialisation. `first` and `last` are the logged
    metrics of those steps; {} when no step was logged. Rounded to 4 significant digits."""
    if not first:
        return {}

    def rounded(value: float) -> float:
        return float(f"{value:.4g}")

    return {
        name: {
            "loss": rounded(weight * last[name]),
            "grad_norm": rounded(last[GRADIENT_NORM + name]),
            "loss_init": rounded(weight * first[name]),
            "grad_norm_init": rounded(first[GRADIENT_NORM + name]),
        }
        for name, weight in term_weights(kd).items()
    }
