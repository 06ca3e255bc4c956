"""Evaluation measures shared by the stages (teacher validation, the eval stage)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def retrieval_metrics(text: torch.Tensor, video: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Text-to-video retrieval: query i's correct video is video i; videos ranked by cosine similarity.

    text [N, D], video [N, D] -> {"r1", "r5", "r10" (percent), "median_rank" (1 = best), "queries"}."""
    similarity = F.normalize(text.float(), dim=-1) @ F.normalize(video.float(), dim=-1).T
    correct = similarity.diagonal().unsqueeze(1)
    ranks = (similarity > correct).sum(dim=1) + 1  # ties count in the query's favour
    metrics = {f"r{k}": 100.0 * (ranks <= k).float().mean().item() for k in ks}
    metrics["median_rank"] = ranks.float().median().item()
    metrics["queries"] = float(len(ranks))
    return metrics
