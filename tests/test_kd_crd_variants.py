"""The two other readings of CRD (README, Fidelity): token-level CRD (`kd_options.crd.level: token`) and the
authors' released per-position NT-Xent (`kd: {crd_nt_xent: ...}`), each against a computation written apart from
it, padding-invariant, and passing gradients to the student's valid tokens only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlkd.distillation import KD_OBJECTIVES, KDBatch
from vlkd.losses import CRDLoss, crd_nt_xent_loss
from vlkd.specs import KDOptions

TOKEN_LEVEL = KDOptions.model_validate({"crd": {"level": "token"}})


def _lengths_mask(lengths: list[int], max_len: int) -> torch.Tensor:
    return torch.arange(max_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _pad(x: torch.Tensor, extra: int) -> torch.Tensor:
    """x [B, L, D] -> [B, L + extra, D], the new positions holding arbitrary large values."""
    return torch.cat([x, 1e3 * torch.randn(x.shape[0], extra, x.shape[2], dtype=x.dtype)], dim=1)


def _pad_mask(mask: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], dim=1)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Three sentences of 5, 3 and 1 tokens; student and teacher states of one width (the head maps to it)."""
    generator = torch.Generator().manual_seed(0)
    return {
        "student": torch.randn(3, 5, 4, generator=generator, dtype=torch.double),
        "teacher": torch.randn(3, 5, 4, generator=generator, dtype=torch.double),
        "mask": _lengths_mask([5, 3, 1], 5),
    }


# The authors' NT-Xent, transcribed from zinengtang/VidLanKD vteacher/loss.py (`mask_correlated_samples`,
# `contrastive_loss_item`); vlm/model.py calls it once per position with temperature 1.0 and divides the sum by L.


def _authors_mask_correlated_samples(batch_size: int) -> torch.Tensor:
    n = 2 * batch_size
    mask = torch.ones((n, n), dtype=bool)
    mask = mask.fill_diagonal_(0)
    for i in range(batch_size):
        mask[i, batch_size + i] = 0
        mask[batch_size + i, i] = 0
    return mask


def _authors_contrastive_loss_item(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    batch_size = z_i.size(0)
    n = 2 * batch_size
    mask = _authors_mask_correlated_samples(batch_size)
    z = torch.cat((z_i, z_j), dim=0)
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=-1) / temperature
    positive_samples = torch.cat((torch.diag(sim, batch_size), torch.diag(sim, -batch_size)), dim=0).reshape(n, 1)
    negative_samples = sim[mask].reshape(n, -1)
    logits = torch.cat((positive_samples, negative_samples), dim=1)
    return F.cross_entropy(logits, torch.zeros(n).long()) / n


def test_crd_nt_xent_on_a_batch_without_padding_is_the_authors_code(batch: dict[str, torch.Tensor]) -> None:
    student, teacher = batch["student"], batch["teacher"]
    length = student.shape[1]
    theirs = sum(_authors_contrastive_loss_item(student[:, i], teacher[:, i], 1.0) for i in range(length)) / length
    full = torch.ones(3, length, dtype=torch.bool)
    assert torch.allclose(crd_nt_xent_loss(student, teacher, full), theirs)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_crd_nt_xent_is_their_loss_over_each_positions_valid_examples(
    batch: dict[str, torch.Tensor], temperature: float
) -> None:
    """With padding: position i's batch is the examples valid there; positions without any are left out."""
    student, teacher, mask = batch["student"], batch["teacher"], batch["mask"]
    per_position = [
        _authors_contrastive_loss_item(student[mask[:, i], i], teacher[mask[:, i], i], temperature)
        for i in range(mask.shape[1])
        if mask[:, i].any()
    ]
    expected = sum(per_position) / len(per_position)
    assert torch.allclose(crd_nt_xent_loss(student, teacher, mask, temperature), expected)


def test_crd_nt_xent_tiny_case_by_hand() -> None:
    # s1 = t1 = (1, 0), s2 = t2 = (0, 1): every anchor's positive scores 1, its two negatives 0, so each of the 4
    # anchors gives -1 + log(e + 2) and the position (2n)^-2 of their sum: (log(e + 2) - 1) / 4.
    states = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    loss = crd_nt_xent_loss(states, states, torch.ones(2, 1, dtype=torch.bool))
    assert math.isclose(loss.item(), (math.log(math.e + 2) - 1) / 4, rel_tol=1e-6)


def test_crd_nt_xent_ignores_padding_whatever_its_values(batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = batch["student"], batch["teacher"], batch["mask"]
    inside = student.clone()
    inside[~mask] = 1e6  # padded positions within the batch's length
    expected = crd_nt_xent_loss(student, teacher, mask)
    assert torch.allclose(crd_nt_xent_loss(inside, teacher, mask), expected)
    assert torch.allclose(crd_nt_xent_loss(_pad(student, 3), _pad(teacher, 3), _pad_mask(mask, 3)), expected)


def test_crd_nt_xent_gradients_reach_the_student_only_at_valid_positions(batch: dict[str, torch.Tensor]) -> None:
    student, mask = batch["student"].requires_grad_(), _pad_mask(batch["mask"], 1)  # a position nobody holds
    crd_nt_xent_loss(_pad(student, 1), _pad(batch["teacher"], 1), mask).backward()
    assert torch.isfinite(student.grad).all() and student.grad[batch["mask"]].abs().sum() > 0
    assert torch.equal(student.grad[~batch["mask"]], torch.zeros_like(student.grad[~batch["mask"]]))


def test_crd_nt_xent_passes_gradcheck(batch: dict[str, torch.Tensor]) -> None:
    student = batch["student"].requires_grad_()
    assert torch.autograd.gradcheck(lambda s: crd_nt_xent_loss(s, batch["teacher"], batch["mask"]), (student,))


# Token-level CRD: Eq. 8 with every valid token an anchor, through the objective the spec names


def _token_crd(
    crd: CRDLoss, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, seed: int | None = None
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    batch = KDBatch({"kd": student}, teacher, None, mask, generator=generator)
    return KD_OBJECTIVES["crd"].loss(batch, TOKEN_LEVEL, crd)


def _eq8_by_loops(crd: CRDLoss, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 8 over the valid tokens, the memory empty: token k's positive is the teacher's state at its position,
    its negatives every other valid token's; CRD's Z = M * mean exp(score / T) over all those scores."""
    tokens = [(b, i) for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i]]
    s = [F.normalize(crd.f1(student[b, i]), dim=0) for b, i in tokens]
    t = [F.normalize(crd.f2(teacher[b, i]), dim=0) for b, i in tokens]
    temperature, m = crd.temperature, crd.num_data
    positives = [torch.dot(s[k], t[k]) / temperature for k in range(len(tokens))]
    negatives = [[torch.dot(s[k], t[j]) / temperature for j in range(len(tokens)) if j != k] for k in range(len(s))]
    scores = positives + [z for row in negatives for z in row]
    z_constant = m * sum(torch.exp(z) for z in scores) / len(scores)
    n = len(tokens) - 1

    def h(z: torch.Tensor) -> torch.Tensor:
        return (torch.exp(z) / z_constant) / (torch.exp(z) / z_constant + n / m)

    terms = [-torch.log(h(positives[k])) - sum(torch.log(1 - h(z)) for z in negatives[k]) for k in range(len(s))]
    return sum(terms) / len(terms)


def test_token_level_crd_is_eq8_over_every_valid_token(batch: dict[str, torch.Tensor]) -> None:
    crd = CRDLoss(4, 4, dim=3, num_data=100).double()
    expected = _eq8_by_loops(crd, batch["student"], batch["teacher"], batch["mask"])
    assert torch.allclose(_token_crd(crd, batch["student"], batch["teacher"], batch["mask"]), expected)


def test_token_level_crd_stores_each_valid_teacher_token_and_no_padding(batch: dict[str, torch.Tensor]) -> None:
    crd = CRDLoss(4, 4, dim=3, buffer_size=16, num_data=100).double()
    _token_crd(crd, _pad(batch["student"], 2), _pad(batch["teacher"], 2), _pad_mask(batch["mask"], 2))
    valid = batch["mask"].sum()
    stored = F.normalize(crd.f2(batch["teacher"][batch["mask"]]), dim=-1).detach()
    assert int(crd.num_written) == valid == 9
    assert torch.allclose(crd.memory[:valid], stored) and torch.equal(crd.memory[valid:], torch.zeros(7, 3).double())


def test_token_level_crd_memory_stays_at_buffer_size(batch: dict[str, torch.Tensor]) -> None:
    crd = CRDLoss(4, 4, dim=3, buffer_size=5, num_negatives=4, num_data=100).double()
    for _ in range(3):
        _token_crd(crd, batch["student"], batch["teacher"], batch["mask"])
    assert crd.memory.shape == (5, 3) and int(crd.filled) == 5 and int(crd.num_written) == 27


def test_token_level_crd_ignores_padding_whatever_its_values(batch: dict[str, torch.Tensor]) -> None:
    """The same loss and the same memory with extra padded positions, from the same state and draws."""
    crd = CRDLoss(4, 4, dim=3, buffer_size=32, num_negatives=6, num_data=100).double()
    _token_crd(crd, batch["student"], batch["teacher"], batch["mask"])  # the memory is read from now on
    padded = CRDLoss(4, 4, dim=3, buffer_size=32, num_negatives=6, num_data=100).double()
    padded.load_state_dict(crd.state_dict())
    loss = _token_crd(crd, batch["student"], batch["teacher"], batch["mask"], seed=3)
    extra = _token_crd(padded, _pad(batch["student"], 2), _pad(batch["teacher"], 2), _pad_mask(batch["mask"], 2), 3)
    assert torch.allclose(extra, loss)
    assert torch.equal(padded.memory, crd.memory) and int(padded.num_written) == int(crd.num_written)


def test_token_level_crd_gradients_reach_the_student_only_at_valid_tokens(batch: dict[str, torch.Tensor]) -> None:
    crd = CRDLoss(4, 4, dim=3, buffer_size=32, num_negatives=6, num_data=100).double()
    _token_crd(crd, batch["student"], batch["teacher"], batch["mask"])
    student = batch["student"].clone().requires_grad_()
    _token_crd(crd, student, batch["teacher"], batch["mask"]).backward()
    assert torch.isfinite(student.grad).all() and student.grad[batch["mask"]].abs().sum() > 0
    assert torch.equal(student.grad[~batch["mask"]], torch.zeros_like(student.grad[~batch["mask"]]))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crd.f1.parameters())
