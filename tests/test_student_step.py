"""The student's training step at the hardware's pace (issue 34): the MLM head scores the masked positions only
and gives the full head's loss and gradients, the whole step (student and every loss term) compiles into one
graph, with nothing that waits for the device, and the task counts what the step computes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vlkd.data.text import SPECIAL_TOKENS, load_vocab_tokenizer
from vlkd.distillation import Distillation, Widths, weighted_total
from vlkd.flops import TRAINED, mlm_head_forward_flops
from vlkd.jobs.distill import DistillTask
from vlkd.masking import IGNORE_INDEX, Masking, draw_masking, prediction_capacity
from vlkd.models.bert import bert_config
from vlkd.models.frozen_teacher import FrozenTeacher
from vlkd.specs import KDOptions, parse_spec
from vlkd.specs.shapes import ModelShape

VOCAB = 60
MASK_ID = 4
BANK = 5
LENGTHS = [40, 33, 25, 12]
"""4 x 40 = 160 positions: the sparse head scores `prediction_capacity(160, 0.15)` = 64 of them"""
SHAPE = ModelShape(preset="tiny", hidden_dropout=0, attention_dropout=0)  # forwards repeat exactly in train mode
OPTIONS = KDOptions(crd={"buffer_size": 16, "num_negatives": 8})
OBJECTIVES = [
    {},
    {"nst": 1.0, "crd": 1.0},  # the paper's (Eq. 4), sentence-level CRD
    {"soft_label": 1.0},
    {"regression": 1.0},
    {"nst_poly": 1.0},
    {"crd_nt_xent": 1.0},
    {"voken": 1.0},
]


def _distillation(kd: dict[str, float]) -> Distillation:
    torch.manual_seed(0)
    return Distillation.build(SHAPE, VOCAB, kd, OPTIONS, Widths(64, 64, 100, BANK), head=True)


def _batch(seed: int, size: int = len(LENGTHS)) -> dict[str, torch.Tensor]:
    """A padded batch of the first `size` of `LENGTHS`, with [CLS] ... [SEP], as the corpus collates it."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_TOKENS), VOCAB, (size, max(LENGTHS)), generator=generator)
    positions = torch.arange(max(LENGTHS))
    lengths = torch.tensor(LENGTHS[:size]).unsqueeze(1)
    attention = (positions < lengths).long()
    special = (positions == 0) | (positions == lengths - 1) | (attention == 0)
    return {"input_ids": ids * attention, "attention_mask": attention, "special_tokens_mask": special}


def _inputs(
    kd: dict[str, float], seed: int, size: int = len(LENGTHS)
) -> tuple[Masking, dict[str, torch.Tensor], dict[str, object]]:
    """A masked batch, and what the frozen teacher gives the objectives for it."""
    batch = _batch(seed, size)
    generator = torch.Generator().manual_seed(seed)
    masking = draw_masking(batch["input_ids"], batch["special_tokens_mask"], MASK_ID, VOCAB, 0.15, generator)
    if not kd:
        return masking, batch, {}
    size, length = batch["input_ids"].shape
    teacher = {
        "teacher_hidden": torch.randn(size, length, 64, generator=generator),
        "teacher_logits": torch.randn(size, length, VOCAB, generator=generator),
        "vokens": torch.randint(BANK, (size, length), generator=generator),
    }
    return masking, batch, teacher


def _sparse(model: torch.nn.Module, masking: Masking, batch: dict, teacher: dict) -> tuple[dict, torch.Tensor]:
    labels, positions = masking.position_labels, masking.positions
    return model(masking.input_ids, batch["attention_mask"], labels, positions=positions, **teacher)


def _backward(model: Distillation, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each trained parameter's gradient of L^S (Eq. 4)."""
    weighted_total(terms, model.kd).backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(actual[name], value, rtol=1e-4, atol=1e-6), name


# The sparse MLM head


def test_the_sparse_head_scores_the_positions_masking_drew_only() -> None:
    masking, batch, _ = _inputs({}, seed=1)
    student = _distillation({}).student
    logits = student(masking.input_ids, batch["attention_mask"], masking.positions)["logits"]
    assert logits.shape == (prediction_capacity(160, 0.15), VOCAB) == (64, VOCAB)
    full = student(masking.input_ids, batch["attention_mask"])["logits"]
    assert full.shape == (4, 40, VOCAB)
    assert torch.allclose(logits, full.flatten(0, 1)[masking.positions], atol=1e-6)


@pytest.mark.parametrize("kd", [{}, {"nst": 1.0, "crd": 1.0}, {"soft_label": 1.0}], ids=["mlm", "nst+crd", "soft"])
def test_the_sparse_head_gives_the_full_heads_loss_and_gradients(kd: dict[str, float]) -> None:
    """The masked positions' labels at the scored positions against every position's labels, same weights."""
    masking, batch, teacher = _inputs(kd, seed=2)
    model = _distillation(kd)
    twin = copy.deepcopy(model)
    assert masking.labels.ne(IGNORE_INDEX).sum() > 0
    full, _ = model(masking.input_ids, batch["attention_mask"], masking.labels, **teacher)
    sparse, _ = _sparse(twin, masking, batch, teacher)
    _assert_same(sparse, full)
    _assert_same(_backward(twin, sparse), _backward(model, full))
    assert model.full_head == ("soft_label" in kd)  # soft labels read every position's logits


# The whole step in one graph


@pytest.fixture
def fresh_compiler() -> Iterator[None]:
    """Every model compiles the same code (`Distillation.forward`, CRD's): each test starts, and leaves, Dynamo
    with no compiled versions of it, so tests do not add up to its recompile limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("fresh_compiler")
@pytest.mark.parametrize("kd", OBJECTIVES, ids=lambda kd: "+".join(kd) or "mlm")
def test_the_student_step_compiles_into_one_graph_with_the_eager_losses(kd: dict[str, float]) -> None:
    """`fullgraph=True` fails at any graph break, hence at anything that reads a value back from the device.
    `aot_eager`: torch.compile's graph capture and autograd without its (slow on CPU) code generation. Three
    training steps: CRD's first scores in-batch negatives and fills its memory, the second draws from it, the
    third has fewer sentences (as a last validation batch), which torch.compile traces with a symbolic size."""
    model = _distillation(kd).train()
    compiled = torch.compile(copy.deepcopy(model), backend="aot_eager", fullgraph=True)
    for seed, size in ((3, 4), (4, 4), (5, 3)):
        masking, batch, teacher = _inputs(kd, seed, size)
        torch.manual_seed(seed)  # CRD's draws of negatives from its memory
        eager, _ = _sparse(model, masking, batch, teacher)
        torch.manual_seed(seed)
        graph, _ = _sparse(compiled, masking, batch, teacher)
        _assert_same(graph, eager)
        _assert_same(_backward(compiled._orig_mod, graph), _backward(model, eager))
        model.zero_grad()
        compiled.zero_grad()
    compiled_buffers = dict(compiled._orig_mod.named_buffers())  # CRD's memory
    for name, buffer in model.named_buffers():
        assert torch.allclose(compiled_buffers[name], buffer, atol=1e-6), name


# The task: what the loop reads


def _tokenizer(directory: Path):
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, *(f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS)))]) + "\n")
    return load_vocab_tokenizer(vocab, lowercase=True)


def _task(tmp_path: Path, kd: dict[str, float], sparse_mlm: bool = True) -> DistillTask:
    """The distill stage's task on a tiny student, with a frozen tiny teacher when `kd` names objectives."""
    from transformers import BertForMaskedLM

    spec = parse_spec(
        {
            "stage": "distill",
            "name": "s",
            "corpus": "corpus/c",
            "teacher": "teacher/t" if kd else None,
            "model": SHAPE.model_dump(),
            "kd": kd,
            "kd_options": OPTIONS.model_dump(),
        }
    )
    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(1)
    teacher = FrozenTeacher(BertForMaskedLM(bert_config(SHAPE, VOCAB)).eval()) if kd else None
    return DistillTask(spec, tokenizer, None, None, 64 if kd else None, 100, sparse_mlm=sparse_mlm, _frozen=teacher)


@pytest.mark.parametrize("kd", [{}, {"nst": 1.0, "crd": 1.0}], ids=["mlm", "nst+crd"])
def test_the_task_reports_each_term_as_a_detached_tensor_and_both_forms_agree(tmp_path, kd) -> None:
    task, full = _task(tmp_path, kd), _task(tmp_path, kd, sparse_mlm=False)
    model = task.build_model().eval()
    batch = _batch(5)
    total, terms = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert terms.keys() == {"loss", "mlm", *kd} and total.requires_grad
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in terms.values())
    assert torch.equal(task.tokens(batch), torch.tensor(sum(LENGTHS)))
    _, full_terms = full.loss(model, batch, torch.Generator().manual_seed(0))  # the same draws
    _assert_same(terms, full_terms)


@pytest.mark.parametrize("kd", [{}, {"nst": 1.0, "crd": 1.0}], ids=["mlm", "nst+crd"])
def test_the_sparse_heads_flops_are_the_full_heads_less_the_positions_it_skips(tmp_path, kd) -> None:
    batch = _batch(6)
    sparse, full = _task(tmp_path, kd).flops(batch), _task(tmp_path, kd, sparse_mlm=False).flops(batch)
    skipped = 160 - prediction_capacity(160, 0.15)
    assert 0 < sparse < full
    assert full - sparse == pytest.approx(TRAINED * mlm_head_forward_flops(SHAPE, VOCAB, skipped))


def test_soft_labels_count_the_full_head_in_either_form(tmp_path) -> None:
    batch = _batch(6)
    kd = {"soft_label": 1.0}
    assert _task(tmp_path, kd).flops(batch) == _task(tmp_path, kd, sparse_mlm=False).flops(batch)
