"""Stage `teacher`: cross-modal pretraining of LM^T and V^T on a `features` artifact (Sec. 3.2), with Ray Train.

L^T = w_ct L_CT + w_mlm L_MLM (Eq. 3 and BERT's MLM); the contrastive term sees the unmasked text (or, with
`contrastive_text: masked`, the masked one in the same LM pass, as the authors' code does), the MLM term the masked
one. Validation reports the losses and text-to-video retrieval (R@1/5/10, median rank) on held-out videos; training
stops early when the validation loss stops improving, and the best weights are published.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from vlkd import losses
from vlkd.artifacts import Manifest, collect_files
from vlkd.data.clips import clip_datasets, clip_features
from vlkd.data.ingest import configure_ray_data
from vlkd.evaluation.retrieval import Retrieval
from vlkd.runtime import JobContext, job_main
from vlkd.specs import TeacherSpec
from vlkd.train import RunPlace, export_logs, fit, load_final, published_weights, run_summary, validation_losses

log = logging.getLogger("vlkd.teacher")


@dataclass
class TeacherTask:
    """The teacher's objectives for the shared loop (`vlkd.train`)."""

    spec: TeacherSpec
    tokenizer: Any
    feature_dim: int

    @property
    def ddp_find_unused(self) -> bool:
        return set(self.spec.objectives) != {"ct", "mlm"}  # an unused branch has no gradients

    def build_model(self) -> nn.Module:
        from vlkd.models.teacher import Teacher

        return Teacher.build(self.spec.model, self.spec.video_model, len(self.tokenizer), self.feature_dim)

    def collate(self, batch: pa.Table) -> dict[str, Any]:
        encoded = self.tokenizer(
            batch.column("text").to_pylist(),
            padding=True,
            truncation=True,
            max_length=self.spec.max_text_len,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        middle_frame = self.spec.visual_input == "middle_frame"
        features, frame_mask = clip_features(batch, self.spec.max_frames, self.feature_dim, middle_frame)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "special_tokens_mask": encoded["special_tokens_mask"].bool() | ~encoded["attention_mask"].bool(),
            "features": torch.from_numpy(features),
            "frame_mask": torch.from_numpy(frame_mask),
            "video": torch.from_numpy(video_codes(batch)),
        }

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["attention_mask"].sum())

    def _terms(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """The loss terms, and L_CT's negatives (x' and v' of each example) when it is trained."""
        objectives = set(self.spec.objectives)
        masked = labels = None
        if "mlm" in objectives:
            masked, labels = losses.mask_tokens(
                batch["input_ids"].cpu(),
                batch["special_tokens_mask"].cpu(),
                self.tokenizer.mask_token_id,
                len(self.tokenizer),
                self.spec.mlm_probability,
                generator,
            )
            masked, labels = masked.to(batch["input_ids"].device), labels.to(batch["input_ids"].device)
        with_video = "ct" in objectives
        out = model(
            batch["input_ids"],
            batch["attention_mask"],
            masked_input_ids=masked,
            features=batch["features"] if with_video else None,
            frame_mask=batch["frame_mask"] if with_video else None,
            contrastive_on_masked=self.spec.contrastive_text == "masked",
        )
        terms: dict[str, torch.Tensor] = {}
        negatives: list[torch.Tensor] = []
        if with_video:
            size = len(batch["input_ids"])
            negatives = [losses.sample_negatives(size, generator).to(batch["input_ids"].device) for _ in range(2)]
            terms["ct"] = losses.token_contrastive_loss(
                out["text_states"], batch["attention_mask"].bool(), out["video_repr"], *negatives, self.spec.margin
            )
        if labels is not None:
            terms["mlm"] = losses.mlm_loss(out["mlm_logits"], labels)
        return terms, negatives

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        terms, negatives = self._terms(model, batch, generator)
        weights = self.spec.loss_weights.model_dump()
        total = sum(weights[name] * value for name, value in terms.items())
        values = {name: float(value.detach()) for name, value in terms.items()}
        drawn = batch_videos(batch["video"], negatives) if "video" in batch else {}
        return total, {"loss": float(total.detach()), **values, **drawn}

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Validation losses and text-to-video retrieval, the eval stage's measure (`vlkd.evaluation.retrieval`)."""
        retrieval = Retrieval(model)
        metrics = validation_losses(self, model, batches, each=retrieval.add)
        return metrics | {f"val_{k}": v for k, v in retrieval.metrics().items()}


def video_codes(batch: pa.Table) -> np.ndarray:
    """Each clip's video as a number that only this batch uses, [B] int64: enough to tell clips of one video."""
    return np.unique(batch.column("video_id").to_numpy(zero_copy_only=False), return_inverse=True)[1].astype(np.int64)


def batch_videos(videos: torch.Tensor, negatives: list[torch.Tensor]) -> dict[str, float]:
    """What a batch shows of how it was drawn: `videos_per_batch`, and `same_video_negatives`, the share of L_CT's
    negatives (x' and v' of Eq. 3, [B] indices each) that are clips of the anchor's own video. Under a uniform
    shuffle of the split the share is about (clips per video - 1) / clips; HowTo100M-shaped features read in stored
    order put 26-28% there (`bench/batch_order.py`; README: how training batches are drawn)."""
    drawn = {"videos_per_batch": float(len(torch.unique(videos)))}
    if negatives:
        same = torch.stack([videos[n.to(videos.device)] == videos for n in negatives])
        drawn["same_video_negatives"] = float(same.float().mean())
    return drawn


def run(spec: TeacherSpec, context: JobContext) -> list[Manifest]:
    from transformers import BertTokenizerFast

    started = time.monotonic()
    store = context.store
    tokenizer_dir = context.scratch / "tokenizer"
    tokenizer_manifest = store.fetch(spec.tokenizer, tokenizer_dir)
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    context.start_ray(spec.resources, extra_cpus=spec.driver_cpus)
    configure_ray_data(spec.resources)
    train = spec.train
    splits, info = clip_datasets(
        store, spec.features, train.val_size, spec.seed, spec.resources, train.batch_size, train.shuffle_window
    )
    feature_dim = info.dim_2d if spec.visual_input == "middle_frame" else info.feature_dim
    task = TeacherTask(spec, tokenizer, feature_dim)
    place = RunPlace(store.storage, context.job_id)
    final = context.scratch / "final"
    fit(task, train, spec.optim, spec.resources, splits, place, spec.seed, f"teacher/{spec.name}", final)
    payload = load_final(final)
    model = task.build_model()
    weights, validation = published_weights(payload, spec.train)
    model.load_state_dict(weights)
    export = context.scratch / "teacher"
    model.save(export, tokenizer_dir)
    export_logs(final, export)
    description = {"feature_dim": feature_dim, "visual_input": spec.visual_input, "objectives": spec.objectives}
    (export / "teacher.json").write_text(json.dumps(description, indent=2))
    metrics = run_summary(payload["state"], validation, time.monotonic() - started)
    manifest = store.publish(
        "teacher",
        spec.name,
        collect_files([export]),
        spec=spec,
        parents=[info.ref, tokenizer_manifest.ref],
        metrics=metrics,
        attributes={
            "features_random_init": store.manifest(info.ref).attributes.get("random_init", False),
            "checkpoints": f"{store.uri}/{place.prefix}",
        },
        job_id=context.job_id,
        cost=context.cost(),
    )
    log.info("%s: best val loss %.4f at step %d", manifest.ref, metrics["best_val_loss"], metrics["best_step"])
    return [manifest]


if __name__ == "__main__":
    job_main("teacher", run)
