"""Text-to-video retrieval scores: ranks against hand-computed values, ties, and a collapsed model at chance."""

from __future__ import annotations

import pytest
import torch

from vlkd.retrieval_metrics import ranking_metrics


def test_a_known_similarity_matrix_gives_its_hand_computed_scores():
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3],  # first: rank 1
            [0.5, 0.4, 0.4, 0.1],  # one ahead, tied with one other: rank 2.5, top 2 with probability 1/2
            [0.7, 0.8, 0.6, 0.9],  # three ahead: rank 4
            [0.1, 0.3, 0.25, 0.2],  # two ahead: rank 3
        ]
    )
    metrics = ranking_metrics(similarity, ks=(1, 2, 5))
    assert metrics["r1"] == pytest.approx(25.0)
    assert metrics["r2"] == pytest.approx(100 * (1 + 0.5 + 0 + 0) / 4)
    assert metrics["r5"] == pytest.approx(100.0)
    assert metrics["median_rank"] == pytest.approx(2.75)  # ranks 1, 2.5, 3, 4: the mean of the middle two
    assert metrics["queries"] == 4


def test_a_collapsed_model_scores_chance_not_perfect():
    """Every text and video vector the same (the L_CT collapse plateau): each caption ties with every video."""
    metrics = ranking_metrics(torch.ones(64, 64))  # every cosine is 1
    assert metrics["r1"] == pytest.approx(100 / 64)
    assert metrics["r10"] == pytest.approx(100 * 10 / 64)
    assert metrics["median_rank"] == pytest.approx(32.5)


def test_perfectly_aligned_vectors_rank_first():
    metrics = ranking_metrics(torch.eye(16))  # each caption's cosine is 1 with its video and 0 with the others
    assert metrics["r1"] == 100.0 and metrics["median_rank"] == 1.0
