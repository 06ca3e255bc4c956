"""The KD term balance: each term's gradient norm at the student's last hidden states (measured on logged steps
only, leaving the step itself alone), the manifest's `kd_balance`, and the report's table of it."""

from __future__ import annotations

import copy

import pytest
import torch

from vlkd.distillation import GRADIENT_NORM, Distillation, Widths, gradient_norms, kd_balance, weighted_total
from vlkd.evaluation.balance import balance_table
from vlkd.evaluation.report import render_markdown, render_table
from vlkd.evaluation.table_text import parse_tables
from vlkd.model_wrappers import compile_model, eager
from vlkd.specs import KDOptions
from vlkd.specs.shapes import ModelShape

KD = {"nst": 2.0, "crd": 1.0}
VOCAB = 40


@pytest.fixture
def distillation() -> Distillation:
    """A tiny student with a head, NST and CRD; in eval mode, so forwards repeat exactly (no dropout, and CRD's
    memory is left alone)."""
    torch.manual_seed(0)
    model = Distillation.build(ModelShape(preset="tiny"), VOCAB, KD, KDOptions(), Widths(16, 16, 100, 0), head=True)
    return model.eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, ...]:
    """A masked batch of 3 sentences (7, 5 and 4 tokens) and the teacher's states for it."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, 7), generator=generator)
    attention = (torch.arange(7) < torch.tensor([[7], [5], [4]])).long()
    labels = torch.where(torch.rand(3, 7, generator=generator) < 0.3, ids, -100)
    return ids, attention, labels, torch.randn(3, 7, 16, generator=generator)


def test_a_terms_gradient_norm_is_that_of_its_own_backward_at_the_last_hidden_states(distillation, inputs) -> None:
    """Against a backward of w_k L_k alone from a fresh forward, the last hidden states' `.grad` read back."""
    norms = gradient_norms(*distillation(*inputs), KD)
    assert norms.keys() == {f"{GRADIENT_NORM}{name}" for name in ("mlm", "nst", "crd")}
    for name, weight in {"mlm": 1.0, **KD}.items():
        terms, hidden = distillation(*inputs)
        hidden.retain_grad()
        (weight * terms[name]).backward()
        assert norms[f"{GRADIENT_NORM}{name}"] == pytest.approx(float(hidden.grad.norm()), rel=1e-5), name
        assert hidden.grad.norm() > 0


def test_the_last_hidden_states_are_the_language_models_last_layer(distillation, inputs) -> None:
    """Upstream of both heads: the LM head's and the distillation head's input."""
    ids, attention = inputs[:2]
    _, hidden = distillation(*inputs)
    language_model = distillation.student.language_model
    expected = language_model(ids, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(hidden, expected, atol=1e-6)


def test_probing_a_step_leaves_its_gradients_as_they_are(distillation, inputs) -> None:
    twin = copy.deepcopy(distillation)
    terms, hidden = distillation(*inputs)
    gradient_norms(terms, hidden, KD)
    assert all(p.grad is None for p in distillation.parameters())  # autograd.grad accumulates nothing
    weighted_total(terms, KD).backward()
    twin_terms, _ = twin(*inputs)
    weighted_total(twin_terms, KD).backward()
    for (name, probed), (_, plain) in zip(distillation.named_parameters(), twin.named_parameters(), strict=True):
        assert (probed.grad is None) == (plain.grad is None), name
        if plain.grad is not None:
            assert torch.equal(probed.grad, plain.grad), name


def test_the_loop_probes_a_compiled_model_through_the_module_beneath(distillation, inputs) -> None:
    """A compiled forward is one autograd node: a term cannot be differentiated by the hidden states it outputs
    (`aot_eager`: torch.compile's autograd without its code generation). The loop probes `eager` of it, the
    same parameters."""
    compiled = torch.compile(copy.deepcopy(distillation), backend="aot_eager")
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        gradient_norms(*compiled(*inputs), KD)
    assert eager(compiled) is compiled._orig_mod
    assert gradient_norms(*eager(compiled)(*inputs), KD) == pytest.approx(gradient_norms(*distillation(*inputs), KD))
    assert eager(compile_model(distillation)) is distillation


def test_kd_balance_weights_each_logged_loss_and_keeps_its_gradient_norm() -> None:
    first = {"loss": 31.0, "mlm": 10.45, "nst": 0.003, "crd": 3.0, **_norms(mlm=0.5, nst=0.001, crd=2.0)}
    last = {"loss": 9.0, "mlm": 7.0, "nst": 0.0012345678, "crd": 2.0, **_norms(mlm=0.4, nst=0.002, crd=0.5)}
    assert kd_balance(first, last, {"nst": 100.0, "crd": 1.0}) == {
        "mlm": {"loss": 7.0, "grad_norm": 0.4, "loss_init": 10.45, "grad_norm_init": 0.5},
        "nst": {"loss": 0.1235, "grad_norm": 0.002, "loss_init": 0.3, "grad_norm_init": 0.001},
        "crd": {"loss": 2.0, "grad_norm": 0.5, "loss_init": 3.0, "grad_norm_init": 2.0},
    }
    assert kd_balance({}, {}, {"nst": 1.0}) == {}  # a run that never reached a logged step


def _norms(**norms: float) -> dict[str, float]:
    return {f"{GRADIENT_NORM}{name}": value for name, value in norms.items()}


def _model(row: str, balance: dict | None) -> dict:
    return {"row": row, "ref": f"student/{row}:v1", "lineage": {"kd": "x", "kd_balance": balance}}


BALANCED = {
    "mlm": {"loss": 7.0, "grad_norm": 0.5, "loss_init": 10.45, "grad_norm_init": 0.05},
    "regression": {"loss": 120.0, "grad_norm": 0.5, "loss_init": 542.0, "grad_norm_init": 0.95},
}


def test_the_balance_table_gives_each_terms_weighted_loss_and_gradient_share_marking_a_dominant_one() -> None:
    models = [_model("Baseline", None), _model("KD", BALANCED)]
    header, rows = balance_table(models)
    assert header == ["Model", "Term", "w·L init", "w·L end", "Gradient share init", "Gradient share end"]
    assert rows == [
        ["KD", "mlm", "10.45", "7", "5.0%", "50.0%"],
        ["KD", "regression", "542", "120", "95.0% (dominates)", "50.0%"],
    ]
    assert balance_table([_model("Baseline", None)]) is None


def test_the_report_has_a_kd_term_balance_section_only_when_a_student_records_one() -> None:
    results = {"tasks": [], "summary": {}, "models": [_model("KD", BALANCED)], "baseline": None}
    markdown = render_markdown(results)
    assert "## KD term balance" in markdown
    section = markdown.split("## KD term balance", 1)[1]
    assert parse_tables(section)[0][2] == ["KD", "regression", "542", "120", "95.0% (dominates)", "50.0%"]
    assert "KD term balance" in render_table(results) and "95.0% (dominates)" in render_table(results)
    plain = {**results, "models": [_model("Baseline", None)]}
    assert "KD term balance" not in render_markdown(plain) and "KD term balance" not in render_table(plain)
