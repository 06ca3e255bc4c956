"""The KD objectives of Sec. 3.4 wired to the student and the frozen teacher, registered by name.

L^S = L_MLM + sum_k w_k L_k over the objectives the spec lists (Eq. 4 for `{nst: 1, crd: 1}`). Every objective
compares the student's KD output (the distillation head's, or its last hidden states without a head) or its
logits with the teacher's, over all valid positions of the same masked input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vlkd import losses
from vlkd.specs import KDOptions


@dataclass
class KDBatch:
    """What the objectives read for one batch."""

    student: dict[str, torch.Tensor]
    """`logits` [B, L, V], `kd` [B, L, D], and module outputs (`crd`, `voken_logits`) from `Student.forward`"""
    teacher_hidden: torch.Tensor
    """[B, L, D_t], the frozen teacher's last hidden states"""
    teacher_logits: torch.Tensor | None
    """[B, L, V], only for the objectives in `USES_LOGITS`"""
    """[B, L, V]"""
    mask: torch.Tensor
    """[B, L], true at valid tokens"""
    vokens: torch.Tensor | None = None
    """[B, L] voken labels (Eq. 9), when the voken objective is on"""


Objective = Callable[[KDBatch, KDOptions], torch.Tensor]

KD_OBJECTIVES: dict[str, Objective] = {
    "soft_label": lambda b, o: losses.soft_label_loss(b.student["logits"], b.teacher_logits, b.mask, o.soft_label.tau),
    "regression": lambda b, o: losses.regression_loss(b.student["kd"], b.teacher_hidden, b.mask),
    "nst": lambda b, o: losses.nst_loss(b.student["kd"], b.teacher_hidden, b.mask, o.nst.sigma, o.nst.normalize),
    "nst_poly": lambda b, o: losses.nst_poly_loss(b.student["kd"], b.teacher_hidden, b.mask),
    "crd": lambda b, o: b.student["crd"],  # computed in the student's forward: its projections are trained
    "voken": lambda b, o: losses.voken_loss(b.student["voken_logits"], b.vokens, b.mask),
}
# Objectives that read the distillation head's output (soft labels reuse the LM head, Sec. 3.4).
USES_HEAD = frozenset({"regression", "nst", "nst_poly", "crd", "voken"})
USES_LOGITS = frozenset({"soft_label"})


def objective_modules(
    kd: dict[str, float], options: KDOptions, kd_dim: int, teacher_dim: int, num_data: int, bank_size: int
) -> dict[str, nn.Module]:
    """The trainable modules some objectives bring: CRD's f1/f2 and memory, the voken classifier."""
    modules: dict[str, nn.Module] = {}
    if "crd" in kd:
        crd = options.crd
        modules["crd"] = losses.CRDLoss(
            kd_dim, teacher_dim, crd.dim, crd.temperature, crd.buffer_size, crd.num_negatives, num_data
        )
    if "voken" in kd:
        modules["voken"] = nn.Linear(kd_dim, bank_size)
    return modules


def weighted_total(mlm: torch.Tensor, terms: dict[str, torch.Tensor], kd: dict[str, float]) -> torch.Tensor:
    """L^S = L_MLM + sum_k w_k L_k (Eq. 4)."""
    return mlm + sum((kd[name] * terms[name] for name in kd), torch.zeros_like(mlm))
