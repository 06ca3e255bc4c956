"""The objectives of Sec. 3.2-3.4 against hand computations: each loss is compared with a loop over examples,
positions and neurons written straight from its equation (the loop is the hand computation), plus a tiny case
worked out on paper in a comment."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from vlkd.losses import (
    CRDLoss,
    assign_vokens,
    crd_nce_loss,
    mean_pool,
    mlm_loss,
    nst_loss,
    nst_poly_loss,
    regression_loss,
    sample_negatives,
    soft_label_loss,
    token_contrastive_loss,
    voken_loss,
)
from vlkd.masking import IGNORE_INDEX, draw_masking, prediction_capacity

MASK_ID = 3


def _lengths_mask(lengths: list[int], max_len: int) -> torch.Tensor:
    return torch.arange(max_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _pad(x: torch.Tensor, extra: int, fill: Callable[..., torch.Tensor] = torch.randn) -> torch.Tensor:
    """x [B, L, ...] -> [B, L + extra, ...], the new positions filled with arbitrary (large) values."""
    return torch.cat([x, 1e3 * fill(x.shape[0], extra, *x.shape[2:], dtype=x.dtype)], dim=1)


def _pad_mask(mask: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], dim=1)


# draw_masking


@pytest.fixture(scope="module")
def masking() -> dict[str, torch.Tensor]:
    vocab = 30522
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(MASK_ID + 1, vocab, (400, 500), generator=generator)
    special = torch.rand(400, 500, generator=generator) < 0.1
    original = input_ids.clone()
    drawn = draw_masking(input_ids, special, MASK_ID, vocab, generator=torch.Generator().manual_seed(1))
    masked, labels = drawn.input_ids, drawn.labels
    return {"input_ids": input_ids, "original": original, "special": special, "masked": masked, "labels": labels}


def test_masking_chooses_15_percent_of_non_special_tokens(masking: dict[str, torch.Tensor]) -> None:
    chosen = masking["labels"] != IGNORE_INDEX
    rate = chosen.sum() / (~masking["special"]).sum()
    # 180k candidates: the binomial's standard deviation is 0.0008, the tolerance six of them
    assert abs(rate.item() - 0.15) < 0.005


def test_masking_replaces_80_10_10(masking: dict[str, torch.Tensor]) -> None:
    chosen = masking["labels"] != IGNORE_INDEX
    masked, original = masking["masked"][chosen], masking["input_ids"][chosen]
    to_mask = (masked == MASK_ID).float().mean().item()
    unchanged = (masked == original).float().mean().item()
    to_random = ((masked != MASK_ID) & (masked != original)).float().mean().item()
    # ~27k chosen: standard deviations 0.0024 and 0.0018, tolerances about six of them
    assert abs(to_mask - 0.8) < 0.015
    assert abs(to_random - 0.1) < 0.01
    assert abs(unchanged - 0.1) < 0.01


def test_masking_never_chooses_special_tokens(masking: dict[str, torch.Tensor]) -> None:
    special = masking["special"]
    assert (masking["labels"][special] == IGNORE_INDEX).all()
    assert torch.equal(masking["masked"][special], masking["input_ids"][special])


def test_masking_labels_are_the_original_exactly_where_chosen(masking: dict[str, torch.Tensor]) -> None:
    labels, input_ids, masked = masking["labels"], masking["input_ids"], masking["masked"]
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(masked[~chosen], input_ids[~chosen])  # what is not chosen is never altered


def test_masking_leaves_its_input_alone(masking: dict[str, torch.Tensor]) -> None:
    assert torch.equal(masking["input_ids"], masking["original"])


def test_masking_is_reproducible_with_a_generator() -> None:
    ids = torch.randint(10, 1000, (8, 64))
    special = torch.zeros(8, 64, dtype=torch.bool)
    first, again, other = (
        draw_masking(ids, special, MASK_ID, 1000, generator=torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)
    )
    assert all(torch.equal(getattr(first, f), getattr(again, f)) for f in ("input_ids", "labels", "positions"))
    assert not torch.equal(first.labels, other.labels)


def test_the_scored_positions_hold_every_chosen_one_with_its_label_and_filler_ignored() -> None:
    ids = torch.randint(10, 1000, (8, 64))
    special = torch.zeros(8, 64, dtype=torch.bool)
    special[:, 0] = special[:, 40:] = True  # [CLS] and padding: drawn like any position, never chosen
    drawn = draw_masking(ids, special, MASK_ID, 1000, generator=torch.Generator().manual_seed(3))
    chosen = (drawn.labels != IGNORE_INDEX).flatten().nonzero().squeeze(1)
    scored = drawn.positions[drawn.position_labels != IGNORE_INDEX]
    assert torch.equal(scored.sort().values, chosen)
    assert torch.equal(drawn.position_labels[drawn.position_labels != IGNORE_INDEX], drawn.labels.flatten()[scored])
    assert len(drawn.positions) == prediction_capacity(8 * 64, 0.15) < 8 * 64


def test_a_draw_beyond_the_capacity_grows_it_and_drops_no_position() -> None:
    assert prediction_capacity(1024, 0.15) == 256  # mean 154 + 8 sigma, to a multiple of 64
    assert prediction_capacity(1024, 0.15, drawn=300) == 320
    assert prediction_capacity(100, 0.5, drawn=100) == 100  # never above the tokens
    ids = torch.randint(10, 1000, (2, 32))
    drawn = draw_masking(ids, torch.zeros(2, 32, dtype=torch.bool), MASK_ID, 1000, mlm_probability=0.99)
    assert (drawn.position_labels != IGNORE_INDEX).sum() == (drawn.labels != IGNORE_INDEX).sum() > 56


# sample_negatives


def test_sample_negatives_never_returns_the_example_itself_and_covers_all_others() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_negatives(5, generator) for _ in range(300)])  # [300, 5]
    for b in range(5):
        assert set(draws[:, b].tolist()) == set(range(5)) - {b}


def test_sample_negatives_of_a_batch_of_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        sample_negatives(1)


# mean_pool


def test_mean_pool_averages_valid_positions_and_gives_zeros_for_an_empty_row() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


# token_contrastive_loss (Eq. 3)


def _contrastive_by_loops(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    video: torch.Tensor,
    neg_text: torch.Tensor,
    neg_video: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    total, count = 0.0, 0
    for b in range(hidden.shape[0]):
        for i in range(hidden.shape[1]):
            if not mask[b, i]:
                continue
            pos = F.cosine_similarity(hidden[b, i], video[b], dim=0)
            b_text = int(neg_text[b])
            neg_t = F.cosine_similarity(hidden[b_text, i], video[b], dim=0) if mask[b_text, i] else 0.0
            neg_v = F.cosine_similarity(hidden[b, i], video[int(neg_video[b])], dim=0)
            total = total + max(0.0, margin - pos + neg_t) + max(0.0, margin - pos + neg_v)
            count += 1
    return total / count


@pytest.fixture
def contrastive_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "text_hidden": torch.randn(4, 6, 5, generator=generator, dtype=torch.double),
        "text_mask": _lengths_mask([6, 2, 4, 1], 6),
        "video_repr": torch.randn(4, 5, generator=generator, dtype=torch.double),
        "neg_text": torch.tensor([1, 3, 0, 2]),
        "neg_video": torch.tensor([2, 0, 3, 1]),
    }


def test_token_contrastive_loss_matches_eq3_by_loops(contrastive_batch: dict[str, torch.Tensor]) -> None:
    expected = _contrastive_by_loops(*contrastive_batch.values(), margin=0.5)
    assert torch.allclose(token_contrastive_loss(**contrastive_batch, margin=0.5), expected)


def test_token_contrastive_loss_tiny_case_by_hand() -> None:
    # Two sentences of one token, h = (1, 0) and (0, 1); videos v = (1, 0) and (1, 1); each is the other's negative.
    # Sentence 0: pos = 1, neg text cos((0,1),(1,0)) = 0, neg video cos((1,0),(1,1)) = 1/sqrt2:
    #   max(0, 1 - 1 + 0) + max(0, 1 - 1 + 0.7071) = 0.7071
    # Sentence 1: pos = cos((0,1),(1,1)) = 0.7071, neg text cos((1,0),(1,1)) = 0.7071, neg video 0:
    #   max(0, 1 - 0.7071 + 0.7071) + max(0, 1 - 0.7071 + 0) = 1 + 0.2929 = 1.2929
    # Mean over the two tokens: (0.7071 + 1.2929) / 2 = 1.0
    loss = token_contrastive_loss(
        torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]),
        torch.ones(2, 1, dtype=torch.bool),
        torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
        torch.tensor([1, 0]),
        torch.tensor([1, 0]),
    )
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


def test_token_contrastive_loss_ignores_extra_padding(contrastive_batch: dict[str, torch.Tensor]) -> None:
    padded = {
        **contrastive_batch,
        "text_hidden": _pad(contrastive_batch["text_hidden"], 3),
        "text_mask": _pad_mask(contrastive_batch["text_mask"], 3),
    }
    assert torch.allclose(token_contrastive_loss(**padded), token_contrastive_loss(**contrastive_batch))


def test_token_contrastive_loss_scores_a_padded_negative_token_as_zero(
    contrastive_batch: dict[str, torch.Tensor],
) -> None:
    """Sentence 0 (6 tokens) takes sentence 1 (2 tokens) as its negative text: positions 2-5 of sentence 1 are
    padding, and whatever they hold, they count as cosine 0."""
    hidden, mask = contrastive_batch["text_hidden"], contrastive_batch["text_mask"]
    changed = torch.where(mask.unsqueeze(-1), hidden, 1e3 * torch.randn_like(hidden))
    assert torch.allclose(
        token_contrastive_loss(**{**contrastive_batch, "text_hidden": changed}),
        token_contrastive_loss(**contrastive_batch),
    )


def test_token_contrastive_loss_passes_gradcheck(contrastive_batch: dict[str, torch.Tensor]) -> None:
    batch = dict(contrastive_batch)
    hidden = batch.pop("text_hidden").requires_grad_()
    video = batch.pop("video_repr").requires_grad_()
    assert torch.autograd.gradcheck(
        lambda h, v: token_contrastive_loss(h, batch["text_mask"], v, batch["neg_text"], batch["neg_video"]),
        (hidden, video),
    )


# mlm_loss


def test_mlm_loss_is_the_mean_cross_entropy_over_masked_positions() -> None:
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 2, 6, 0
    expected = 0.0
    for b, i in [(0, 1), (1, 3), (1, 4)]:
        expected -= torch.log_softmax(logits[b, i], dim=0)[labels[b, i]] / 3
    assert torch.allclose(mlm_loss(logits, labels), expected)


def test_mlm_loss_tiny_case_by_hand() -> None:
    # Uniform logits over a vocabulary of 4: every masked token has probability 1/4, loss = log 4 = 1.3863.
    labels = torch.tensor([[1, IGNORE_INDEX, 3]])
    assert mlm_loss(torch.zeros(1, 3, 4), labels).item() == pytest.approx(math.log(4))


def test_mlm_loss_with_nothing_masked_is_a_differentiable_zero() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_mlm_loss_ignores_extra_padding() -> None:
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[1, IGNORE_INDEX, 5, IGNORE_INDEX], [IGNORE_INDEX, 0, 2, 3]])
    padded_labels = torch.cat([labels, torch.full((2, 3), IGNORE_INDEX)], dim=1)
    assert torch.allclose(mlm_loss(_pad(logits, 3), padded_labels), mlm_loss(logits, labels))


# Student-teacher batches shared by the KD objectives


@pytest.fixture
def kd_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "student": torch.randn(3, 5, 4, generator=generator, dtype=torch.double),
        "teacher": torch.randn(3, 5, 4, generator=generator, dtype=torch.double),
        "mask": _lengths_mask([5, 3, 1], 5),
    }


# soft_label_loss (Eq. 5)


def test_soft_label_loss_matches_eq5_by_loops(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch["student"], kd_batch["teacher"], kd_batch["mask"]
    terms = []
    for b in range(3):
        for i in range(5):
            if mask[b, i]:
                p_teacher = torch.exp(teacher[b, i] / 2) / torch.exp(teacher[b, i] / 2).sum()
                p_student = torch.exp(student[b, i] / 2) / torch.exp(student[b, i] / 2).sum()
                terms.append(-sum(p_teacher[z] * torch.log(p_student[z]) for z in range(4)))
    expected = sum(terms) / len(terms)
    assert torch.allclose(soft_label_loss(student, teacher, mask, tau=2.0), expected)


def test_soft_label_loss_of_identical_logits_is_the_teachers_entropy() -> None:
    # Logits (0, 0) at tau = 2: softmax (1/2, 1/2), entropy log 2 = 0.6931, not 0 (Eq. 5 is a cross-entropy).
    logits = torch.zeros(1, 1, 2)
    assert soft_label_loss(logits, logits, torch.ones(1, 1)).item() == pytest.approx(math.log(2))


def test_soft_label_loss_ignores_extra_padding(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    padded = soft_label_loss(_pad(student, 2), _pad(teacher, 2), _pad_mask(mask, 2))
    assert torch.allclose(padded, soft_label_loss(student, teacher, mask))


# regression_loss (Eq. 6)


def test_regression_loss_matches_eq6_by_loops(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    distances = [((student[b, i] - teacher[b, i]) ** 2).sum() for b in range(3) for i in range(5) if mask[b, i]]
    assert torch.allclose(regression_loss(student, teacher, mask), sum(distances) / len(distances))


def test_regression_loss_tiny_case_by_hand() -> None:
    # Token 1: |(1, 2) - (0, 0)|^2 = 5; token 2: |(3, 3) - (1, 1)|^2 = 8; the padded third token is ignored.
    # Mean: (5 + 8) / 2 = 6.5
    student = torch.tensor([[[1.0, 2.0], [3.0, 3.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    assert regression_loss(student, teacher, torch.tensor([[1, 1, 0]])).item() == pytest.approx(6.5)


def test_regression_loss_of_identical_states_is_zero(kd_batch: dict[str, torch.Tensor]) -> None:
    assert regression_loss(kd_batch["teacher"], kd_batch["teacher"], kd_batch["mask"]).item() == 0.0


def test_regression_loss_ignores_extra_padding(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    padded = regression_loss(_pad(student, 2), _pad(teacher, 2), _pad_mask(mask, 2))
    assert torch.allclose(padded, regression_loss(student, teacher, mask))


# nst_loss (Eq. 7)


def _neurons_by_loops(hidden: torch.Tensor, mask: torch.Tensor, b: int, normalize: bool) -> list[torch.Tensor]:
    """Example b's neurons: one vector over the positions per hidden dimension, padding zeroed."""
    neurons = []
    for d in range(hidden.shape[2]):
        column = torch.stack([hidden[b, i, d] if mask[b, i] else hidden.new_zeros(()) for i in range(hidden.shape[1])])
        neurons.append(column / column.norm() if normalize else column)
    return neurons


def _nst_by_loops(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, sigma: float, normalize: bool
) -> torch.Tensor:
    def k(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((a - c) ** 2).sum() / (2 * sigma**2))

    def mean_k(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
        return sum(k(x, y) for x in xs for y in ys) / (len(xs) * len(ys))

    per_example = []
    for b in range(student.shape[0]):
        s = _neurons_by_loops(student, mask, b, normalize)
        t = _neurons_by_loops(teacher, mask, b, normalize)
        per_example.append(mean_k(s, s) + mean_k(t, t) - 2 * mean_k(s, t))
    return sum(per_example) / len(per_example)


@pytest.mark.parametrize(("sigma", "normalize"), [(1.0, True), (3.0, False)])
def test_nst_loss_matches_eq7_by_loops(kd_batch: dict[str, torch.Tensor], sigma: float, normalize: bool) -> None:
    student, teacher, mask = kd_batch.values()
    expected = _nst_by_loops(student, teacher, mask, sigma, normalize)
    assert torch.allclose(nst_loss(student, teacher, mask, sigma=sigma, normalize=normalize), expected)


def test_nst_loss_supports_different_widths(kd_batch: dict[str, torch.Tensor]) -> None:
    student = torch.randn(3, 5, 7, dtype=torch.double)
    teacher, mask = kd_batch["teacher"], kd_batch["mask"]
    assert torch.allclose(nst_loss(student, teacher, mask), _nst_by_loops(student, teacher, mask, 1.0, True))


def test_nst_loss_tiny_case_by_hand() -> None:
    # One token; student neurons 2 and -3 normalise to 1 and -1, the teacher's one neuron 5 to 1. With sigma = 1:
    #   mean k(s, s') = (1 + e^-2 + e^-2 + 1) / 4 = (1 + e^-2) / 2,  mean k(t, t') = 1,
    #   mean k(s, t) = (1 + e^-2) / 2,  MMD^2 = (1 + e^-2) / 2 + 1 - (1 + e^-2) = (1 - e^-2) / 2 = 0.43233
    loss = nst_loss(torch.tensor([[[2.0, -3.0]]]), torch.tensor([[[5.0]]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx((1 - math.exp(-2)) / 2)


def test_nst_loss_of_identical_states_is_zero(kd_batch: dict[str, torch.Tensor]) -> None:
    assert nst_loss(kd_batch["teacher"], kd_batch["teacher"], kd_batch["mask"]).item() == pytest.approx(0, abs=1e-12)


def test_nst_loss_ignores_extra_padding(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    padded = nst_loss(_pad(student, 2), _pad(teacher, 2), _pad_mask(mask, 2))
    assert torch.allclose(padded, nst_loss(student, teacher, mask))


def test_nst_loss_passes_gradcheck(kd_batch: dict[str, torch.Tensor]) -> None:
    student = kd_batch["student"].requires_grad_()
    assert torch.autograd.gradcheck(lambda s: nst_loss(s, kd_batch["teacher"], kd_batch["mask"]), (student,))


# nst_poly_loss (the authors' NST)


def test_nst_poly_loss_matches_the_authors_formula_by_loops(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    per_example = []
    for b in range(3):
        s = _neurons_by_loops(F.normalize(student, dim=-1), mask, b, normalize=True)
        t = _neurons_by_loops(F.normalize(teacher, dim=-1), mask, b, normalize=True)
        student_student = sum((x @ y) ** 2 for x in s for y in s) / 16
        student_teacher = sum((x @ y) ** 2 for x in s for y in t) / 16
        per_example.append(student_student - 2 * student_teacher)
    assert torch.allclose(nst_poly_loss(student, teacher, mask), sum(per_example) / 3)


def test_nst_poly_loss_tiny_case_by_hand() -> None:
    # One token of width 2: student (3, 4) -> token-normalised (0.6, 0.8) -> each neuron normalised over the one
    # position: 1 and 1. Teacher (1, 0) -> neurons 1 and 0. (s.s')^2 = 1 for all 4 pairs; (s.t)^2 = 1, 0, 1, 0.
    # Loss = 1 - 2 * 0.5 = 0.
    loss = nst_poly_loss(torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[1.0, 0.0]]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_nst_poly_loss_ignores_extra_padding(kd_batch: dict[str, torch.Tensor]) -> None:
    student, teacher, mask = kd_batch.values()
    padded = nst_poly_loss(_pad(student, 2), _pad(teacher, 2), _pad_mask(mask, 2))
    assert torch.allclose(padded, nst_poly_loss(student, teacher, mask))


# crd_nce_loss (Eq. 8)


def _crd_naive(pos: torch.Tensor, neg: torch.Tensor, num_data: int, temperature: float) -> torch.Tensor:
    ratio = neg.shape[1] / num_data

    def h(score: torch.Tensor) -> torch.Tensor:
        return torch.exp(score / temperature) / (torch.exp(score / temperature) + ratio)

    return (-torch.log(h(pos)) - torch.log(1 - h(neg)).sum(1)).mean()


def test_crd_nce_loss_equals_the_naive_formula_for_moderate_scores() -> None:
    generator = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(6, generator=generator, dtype=torch.double), torch.randn(6, 9, dtype=torch.double)
    assert torch.allclose(crd_nce_loss(pos, neg, num_data=50, temperature=0.5), _crd_naive(pos, neg, 50, 0.5))


def test_crd_nce_loss_tiny_case_by_hand() -> None:
    # N = M = 1 and z = 0: h = 1 / (1 + 1) = 1/2, so -log h(pos) - log(1 - h(neg)) = 2 log 2 = 1.3863.
    # Scores 0.07 at temperature 0.07 (z = 1): h = e / (e + 1); -log h = log(1 + e^-1), -log(1 - h) = log(1 + e).
    assert crd_nce_loss(torch.zeros(1), torch.zeros(1, 1), num_data=1).item() == pytest.approx(2 * math.log(2))
    loss = crd_nce_loss(torch.tensor([0.07]), torch.tensor([[0.07]]), num_data=1, temperature=0.07)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)) + math.log(1 + math.e))


def test_crd_nce_loss_is_finite_for_extreme_scores() -> None:
    pos = torch.tensor([1e4, -1e4], requires_grad=True)
    neg = torch.tensor([[-1e4, 1e4], [1e4, -1e4]], requires_grad=True)
    loss = crd_nce_loss(pos, neg, num_data=1000, temperature=0.07)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()


def test_crd_nce_loss_passes_gradcheck() -> None:
    pos = torch.randn(3, dtype=torch.double, requires_grad=True)
    neg = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, n: crd_nce_loss(p, n, num_data=100, temperature=0.5), (pos, neg))


# CRDLoss


def _embeddings(crd: CRDLoss, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.normalize(crd.f1(student), dim=-1), F.normalize(crd.f2(teacher), dim=-1)


def test_crd_loss_reaches_the_student_and_f1_f2_never_the_teacher() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=8, num_negatives=10, num_data=100)
    crd(torch.randn(4, 6), torch.randn(4, 5))  # the second step scores negatives from the memory
    student, teacher = torch.randn(4, 6, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    crd(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*crd.f1.parameters(), *crd.f2.parameters()])
    assert teacher.grad is None


def test_crd_loss_uses_the_other_examples_as_negatives_while_the_memory_is_empty() -> None:
    crd = CRDLoss(6, 5, dim=4, num_data=100)
    student, teacher = torch.randn(3, 6), torch.randn(3, 5)
    s, t = _embeddings(crd, student, teacher)
    scores = s @ t.T
    negatives = torch.stack([torch.cat([scores[b, :b], scores[b, b + 1 :]]) for b in range(3)])
    expected = crd_nce_loss(*_normalised(scores.diagonal(), negatives, 0.07, 100), num_data=100, temperature=0.07)
    assert torch.allclose(crd(student, teacher), expected)


def test_crd_loss_draws_negatives_from_the_filled_part_of_the_memory() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=10, num_negatives=7, num_data=100)
    entry = F.normalize(torch.randn(4), dim=0)
    state = crd.state_dict()  # as a resumed run gets it
    state["memory"][:2] = entry
    state["memory"][2:] = float("nan")  # never filled: drawing from here would poison the loss
    state["num_written"] = torch.tensor(2)
    crd.load_state_dict(state)
    student, teacher = torch.randn(3, 6), torch.randn(3, 5)
    s, t = _embeddings(crd, student, teacher)
    positive, negative = (s * t).sum(-1), (s @ entry).unsqueeze(1).expand(3, 7)
    expected = crd_nce_loss(*_normalised(positive, negative, 0.07, 100), num_data=100, temperature=0.07)
    assert torch.allclose(crd(student, teacher), expected)


def _normalised(positive, negative, temperature, num_data):
    """Scores shifted by T log Z, CRD's normalising constant Z = M * mean exp(score / T) over the first batch."""
    z = torch.cat([positive.flatten(), negative.flatten()]) / temperature
    log_z = torch.logsumexp(z, 0) - math.log(len(z)) + math.log(num_data)
    return positive - temperature * log_z, negative - temperature * log_z


def test_crd_normalising_constant_is_fixed_after_the_first_training_batch() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=64, num_negatives=32, num_data=1000)
    crd(torch.randn(8, 6), torch.randn(8, 5))
    log_z = float(crd.log_z)
    student, teacher = torch.randn(8, 6), torch.randn(8, 5)
    s, t = _embeddings(crd, student, teacher)
    loss = crd(student, teacher)
    assert float(crd.log_z) == log_z and "log_z" in crd.state_dict()
    # Without Z every negative's h is near 1 once exp(z) >> N/M, and the sum over N negatives explodes.
    plain = crd_nce_loss((s * t).sum(-1), s @ crd.memory[:8].T, num_data=1000, temperature=0.07)
    assert loss.item() < plain.item()


def test_crd_loss_queue_wraps_around_at_buffer_size() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=5, num_negatives=3, num_data=100)
    teachers = [torch.randn(3, 5) for _ in range(3)]
    for teacher in teachers:
        crd(torch.randn(3, 6), teacher)
    written = torch.cat([F.normalize(crd.f2(t), dim=-1) for t in teachers]).detach()  # 9 embeddings, 5 slots
    assert int(crd.filled) == 5 and int(crd.num_written) == 9
    # Slot j holds the last embedding written to it: j, then j + 5.
    assert torch.allclose(crd.memory, torch.stack([written[5], written[6], written[7], written[8], written[4]]))


def test_crd_loss_keeps_the_last_entries_of_a_batch_larger_than_the_memory() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=2, num_negatives=3, num_data=100)
    teacher = torch.randn(5, 5)
    crd(torch.randn(5, 6), teacher)
    written = F.normalize(crd.f2(teacher), dim=-1).detach()
    # Embeddings 3 and 4 survive, in the slots a one-by-one FIFO would have put them: 3 % 2 = 1, 4 % 2 = 0.
    assert torch.allclose(crd.memory, torch.stack([written[4], written[3]]))


def test_crd_loss_leaves_the_memory_alone_in_eval_mode() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=4, num_data=100).eval()
    crd(torch.randn(3, 6), torch.randn(3, 5))
    assert int(crd.filled) == 0 and torch.equal(crd.memory, torch.zeros(4, 4))


def test_crd_loss_memory_is_in_the_state_dict_and_follows_the_module() -> None:
    crd = CRDLoss(6, 5, dim=4, buffer_size=4, num_data=100)
    crd(torch.randn(3, 6), torch.randn(3, 5))
    state = crd.state_dict()
    assert {"memory", "num_written"} <= state.keys() and int(state["num_written"]) == 3
    restored = CRDLoss(6, 5, dim=4, buffer_size=4, num_data=100)
    restored.load_state_dict(state)
    assert int(restored.filled) == 3 and torch.equal(restored.memory, crd.memory)
    assert crd.double().memory.dtype == torch.double


def test_crd_loss_of_a_single_example_before_any_memory_is_zero() -> None:
    # No negatives at all (N = 0): h = exp(z) / exp(z) = 1 and the bound is 0, not nan.
    assert CRDLoss(6, 5, dim=4)(torch.randn(1, 6), torch.randn(1, 5)).item() == 0.0


# assign_vokens and voken_loss (Eq. 9)


def test_assign_vokens_picks_the_video_of_highest_cosine_by_loops() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden, bank = torch.randn(2, 4, 3, generator=generator), torch.randn(6, 3, generator=generator)
    expected = [
        [
            max(range(6), key=lambda k, b=b, i=i: F.cosine_similarity(hidden[b, i], bank[k], dim=0).item())
            for i in range(4)
        ]
        for b in range(2)
    ]
    assert assign_vokens(hidden, bank).tolist() == expected


def test_assign_vokens_uses_cosine_not_dot_product() -> None:
    # h = (1, 2): dot products with (10, 0) and (0, 1) are 10 and 2, cosines 0.447 and 0.894 -> voken 1.
    assert assign_vokens(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[10.0, 0.0], [0.0, 1.0]])).tolist() == [[1]]


def test_voken_loss_matches_eq9_by_loops() -> None:
    logits = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    vokens = torch.tensor([[0, 4, 2, 1], [3, 3, 0, 0]])
    mask = _lengths_mask([4, 2], 4)
    terms = [-torch.log_softmax(logits[b, i], 0)[vokens[b, i]] for b in range(2) for i in range(4) if mask[b, i]]
    assert torch.allclose(voken_loss(logits, vokens, mask), sum(terms) / len(terms))


def test_voken_loss_ignores_extra_padding_whatever_its_vokens() -> None:
    logits, vokens, mask = torch.randn(2, 3, 5), torch.tensor([[0, 4, 2], [3, 1, 1]]), _lengths_mask([3, 1], 3)
    padded_vokens = torch.cat([vokens, torch.full((2, 2), 99_999)], dim=1)  # not even a valid voken
    padded = voken_loss(_pad(logits, 2), padded_vokens, _pad_mask(mask, 2))
    assert torch.allclose(padded, voken_loss(logits, vokens, mask))


# Gradients of every KD objective reach the student


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t, m: soft_label_loss(s, t, m),
        lambda s, t, m: regression_loss(s, t, m),
        lambda s, t, m: nst_loss(s, t, m),
        lambda s, t, m: nst_poly_loss(s, t, m),
        lambda s, t, m: voken_loss(s, t.argmax(-1), m),
        lambda s, t, m: mlm_loss(s, t.argmax(-1).masked_fill(~m, IGNORE_INDEX)),
    ],
    ids=["soft_label", "regression", "nst", "nst_poly", "voken", "mlm"],
)
def test_gradients_reach_the_student_only_at_valid_positions(
    kd_batch: dict[str, torch.Tensor], loss: Callable[..., torch.Tensor]
) -> None:
    student, teacher, mask = kd_batch["student"].requires_grad_(), kd_batch["teacher"], kd_batch["mask"]
    loss(student, teacher, mask).backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[mask].abs().sum() > 0
    assert torch.equal(student.grad[~mask], torch.zeros_like(student.grad[~mask]))


def test_crd_loss_compiles_to_one_graph_and_computes_what_eager_does() -> None:
    """No step reads the memory on the host (a read would wait for the GPU every step and split torch.compile's
    graph): `fullgraph=True` refuses any break. Same losses and memory as eager, through the wrap-around."""
    eager = CRDLoss(6, 5, dim=4, buffer_size=8, num_negatives=10, num_data=100)
    module = copy.deepcopy(eager)
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    for step in range(4):  # 12 embeddings into 8 slots: empty memory, filling, full
        student, teacher = torch.randn(3, 6), torch.randn(3, 5)
        torch.manual_seed(step)
        expected = eager(student, teacher)
        torch.manual_seed(step)
        assert torch.allclose(compiled(student, teacher), expected)
    assert int(module.num_written) == 12 and torch.equal(module.memory, eager.memory)
    assert torch.equal(module.log_z, eager.log_z)
