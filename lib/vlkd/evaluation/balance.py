"""The KD term balance of an eval run's students: how much each term of Eq. 4 steers a student.

At the paper's unit weights the terms differ in scale by orders of magnitude (issue 33 measured, at
initialisation: MLM 10.45, L2 regression 542, NST 0.003, CRD 3.0), so one of them can all but decide the student's
updates. A student's manifest records, per term, its weighted loss w_k L_k and the norm of its gradient at the
student's last hidden states, at the first logged step and over the last (`kd_balance`, `vlkd.distillation`); the
eval stage copies it into each model's lineage, and this turns it into the report's table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DOMINANT_SHARE = 0.9
"""a term holding more than this share of the summed gradient norms decides the student's updates by itself"""
BALANCE_NOTE = (
    "Per student and term of its loss (Eq. 4): the weighted loss w·L, and the term's share of the summed norms of "
    f"the terms' gradients at the student's last hidden states, at the first logged step (init) and at the last; "
    f"a term above {DOMINANT_SHARE:.0%} of the gradient dominates."
)
HEADER = ["Model", "Term", "w·L init", "w·L end", "Gradient share init", "Gradient share end"]


def _shares(balance: Mapping[str, Mapping[str, float]], key: str) -> dict[str, float]:
    """Each term's `key` (a gradient norm) as a fraction of their sum; nan when the sum is 0."""
    total = math.fsum(values[key] for values in balance.values())
    return {term: values[key] / total if total > 0 else math.nan for term, values in balance.items()}


def _share(share: float) -> str:
    if math.isnan(share):
        return "n/a"
    return f"{share:.1%}" + (" (dominates)" if share > DOMINANT_SHARE else "")


def balance_table(models: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the balance table: a row per term of each model whose lineage has a `kd_balance` (the
    students distilled with KD terms); None when no model has one."""
    rows = []
    for model in models:
        balance = model.get("lineage", {}).get("kd_balance")
        if not balance:
            continue
        init, end = _shares(balance, "grad_norm_init"), _shares(balance, "grad_norm")
        for term, values in balance.items():
            losses = (f"{values['loss_init']:.4g}", f"{values['loss']:.4g}")
            rows.append([model["row"], term, *losses, _share(init[term]), _share(end[term])])
    return (list(HEADER), rows) if rows else None
