"""Text-to-video retrieval measures (R@k, median rank), shared by the teacher's validation and the eval stage."""

from __future__ import annotations

import torch

# Cosines closer than this are a tie: a collapsed model's equal vectors give cosines that differ in the last bits.
TIE = 1e-6


def ranking_metrics(similarity: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@k and the median rank of each row's diagonal entry among the row's scores, similarity [N, N].

    Ties are broken at random, in expectation: a correct video that trails g videos and ties with t (itself
    included) ranks g + (t + 1) / 2 and is within the top k with probability clip((k - g) / t, 0, 1). So a collapsed
    model, whose vectors are all alike, scores chance (R@k = k / N, median rank (N + 1) / 2) instead of a perfect
    score. The median is the usual one: the mean of the two middle ranks for an even number of queries."""
    correct = similarity.diagonal().unsqueeze(1)
    ahead = (similarity > correct + TIE).sum(dim=1).double()
    tied = ((similarity - correct).abs() <= TIE).sum(dim=1).double()
    ranks = ahead + (tied + 1) / 2
    metrics = {f"r{k}": 100.0 * ((k - ahead) / tied).clamp(0, 1).mean().item() for k in ks}
    metrics["median_rank"] = ranks.quantile(0.5).item()
    metrics["queries"] = float(len(ranks))
    return metrics
