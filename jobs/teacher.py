"""Stage `teacher`: cross-modal pretraining of LM^T and V^T on a `features` artifact (Sec. 3.2), with Ray Train.

L^T = w_ct L_CT + w_mlm L_MLM (Eq. 3 and BERT's MLM); the contrastive term sees the unmasked text (or, with
`contrastive_text: masked`, the masked one, as the authors' code does), the MLM term the masked one, in one LM pass
(`vlkd.models.teacher.TeacherPretraining`, whose forward computes every term). The step never waits for the
device: masks and negatives are drawn on the CPU and sent without blocking, and the terms stay on the device until
the loop logs them. Validation reports the losses and text-to-video retrieval (R@1/5/10, median rank) on held-out
videos; training stops early when the validation loss stops improving, and the best weights are published.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from vlkd import flops, losses
from vlkd.artifacts import Manifest, collect_files
from vlkd.checkpoints import RunPlace, published_weights, run_summary
from vlkd.curves import export_logs
from vlkd.data.caption_tokens import CaptionTokens
from vlkd.data.clips import clip_datasets, clip_features
from vlkd.data.corpus import pad_sequences
from vlkd.data.ingest import configure_ray_data
from vlkd.data.packing import Packing, pack
from vlkd.evaluation.retrieval import Retrieval
from vlkd.masking import draw_masking, prediction_capacity, to_device
from vlkd.models.teacher import Teacher, TeacherPretraining, reads_both_texts
from vlkd.runtime import JobContext, job_main
from vlkd.specs import TeacherSpec
from vlkd.train import fit
from vlkd.training_task import validation_losses

log = logging.getLogger("vlkd.teacher")


@dataclass
class TeacherTask:
    """The teacher's objectives for the shared loop (`vlkd.train`)."""

    spec: TeacherSpec
    tokenizer: Any
    feature_dim: int
    sparse_mlm: bool = True
    """the MLM head and its cross-entropy at the masked positions only (`draw_masking`); False scores every
    position, the same loss at several times the head's cost, kept for `bench.train_step` to measure against"""
    packed: bool = True
    """LM^T reads the captions packed several to a row (`vlkd.data.packing`): the same states and losses over
    fewer positions; False reads them padded, kept for `bench.train_step` to measure against"""

    @property
    def ddp_find_unused(self) -> bool:
        return set(self.spec.objectives) != {"ct", "mlm"}  # an unused branch has no gradients

    def build_model(self) -> TeacherPretraining:
        spec = self.spec
        teacher = Teacher.build(spec.model, spec.video_model, len(self.tokenizer), self.feature_dim)
        weights = {name: getattr(spec.loss_weights, name) for name in spec.objectives}
        return TeacherPretraining(teacher, weights, spec.margin, spec.contrastive_text == "masked")

    @cached_property
    def prepare_rows(self) -> CaptionTokens:
        """Captions tokenised where Ray Data reads them (`vlkd.data.ingest.RowsPreparer`): `text` becomes
        `input_ids`, the costliest part of the collate, out of the training process; by an object of its own, so
        the read tasks import neither this module nor torch."""
        return CaptionTokens(self.tokenizer, self.spec.max_text_len)

    def collate(self, batch: pa.Table) -> dict[str, Any]:
        """Rows of `prepare_rows` -> tensors: captions padded to a multiple of `buckets.TOKENS` (at most
        `max_text_len`: `corpus.pad_sequences`), clips to one of `buckets.FRAMES` (`clip_features`): a compiled step
        sees few shapes. The special tokens are each caption's first and last ([CLS], [SEP]) and the padding: a
        caption's own text "[SEP]" is a word to learn, as the tokenizer's `special_tokens_mask` has it."""
        ids, attention = pad_sequences(batch.column("input_ids"), self.tokenizer.pad_token_id, self.spec.max_text_len)
        lengths = attention.sum(axis=1)
        positions = np.arange(ids.shape[1])
        special = (positions == 0) | (positions == lengths[:, None] - 1) | (attention == 0)
        packing = pack(lengths, ids.shape[1]) if self.packed else None
        middle_frame = self.spec.visual_input == "middle_frame"
        features, frame_mask = clip_features(batch, self.spec.max_frames, self.feature_dim, middle_frame)
        videos = video_codes(batch)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(attention),
            "special_tokens_mask": torch.from_numpy(special),
            "features": torch.from_numpy(features),
            "frame_mask": torch.from_numpy(frame_mask),
            "video": torch.from_numpy(videos),
            # counted here, where the batch is on the host: on the device it would take a wait to read
            "videos_per_batch": torch.tensor(len(np.unique(videos)), dtype=torch.float32),
            **({} if packing is None else {PACKING + k: torch.from_numpy(v) for k, v in vars(packing).items()}),
        }

    def tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["attention_mask"].sum()

    def flops(self, batch: dict[str, Any]) -> float:
        """LM^T over the rows it reads (the packed rows or the B padded ones, twice when it reads both texts), the
        MLM head at the positions it scores, and V^T's projection and encoder over the [B, T] frames, all trained."""
        spec = self.spec
        size, length = batch["input_ids"].shape
        texts = 2 if reads_both_texts(spec.objectives, spec.contrastive_text == "masked") else 1
        rows = len(batch[PACKING + "gather"]) if PACKING + "gather" in batch else size
        total = flops.encoder_forward_flops(spec.model, texts * rows, length)
        if "mlm" in spec.objectives:
            scored = size * length
            if self.sparse_mlm:
                scored = prediction_capacity(scored, spec.mlm_probability)
            total += flops.mlm_head_forward_flops(spec.model, len(self.tokenizer), scored)
        if "ct" in spec.objectives:
            frames = batch["features"].shape[1]
            video = spec.video_model
            total += flops.linear_forward_flops(size * frames, self.feature_dim, video.hidden_size)
            total += flops.encoder_forward_flops(video, size, frames)
        return flops.TRAINED * total

    def inputs(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """The arguments of `TeacherPretraining.forward` for `batch`: the MLM masking and L_CT's negatives (x' and
        v' of each example) of the objectives trained, drawn on the CPU `generator` and sent to the batch's
        device without blocking (`draw_masking`, `to_device`)."""
        objectives = set(self.spec.objectives)
        ids = batch["input_ids"]
        inputs = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
        if PACKING + "gather" in batch:
            inputs["packing"] = tuple(batch[PACKING + field.name] for field in fields(Packing))
        if "mlm" in objectives:
            masking = draw_masking(
                ids,
                batch["special_tokens_mask"],
                self.tokenizer.mask_token_id,
                len(self.tokenizer),
                self.spec.mlm_probability,
                generator,
            )
            inputs["masked_input_ids"] = masking.input_ids
            if self.sparse_mlm:
                inputs.update(mlm_labels=masking.position_labels, mlm_positions=masking.positions)
            else:
                inputs["mlm_labels"] = masking.labels
        if "ct" in objectives:
            drawn = tuple(losses.sample_negatives(len(ids), generator) for _ in range(2))
            negatives = to_device(drawn, ids.device)
            inputs.update(features=batch["features"], frame_mask=batch["frame_mask"], negatives=negatives)
        return inputs

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.inputs(batch, generator)
        out = model(**inputs)
        terms = {name: value.detach() for name, value in out.items()}
        if "negatives" in inputs:
            terms["same_video_negatives"] = same_video_negatives(batch["video"], inputs["negatives"])
        return out["loss"], {**terms, "videos_per_batch": batch["videos_per_batch"]}

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Validation losses and text-to-video retrieval, the eval stage's measure (`vlkd.evaluation.retrieval`)."""
        retrieval = Retrieval(model)
        metrics = validation_losses(self, model, batches, each=retrieval.add)
        return metrics | {f"val_{k}": v for k, v in retrieval.metrics().items()}


PACKING = "packing_"
"""the prefix of a collated batch's `vlkd.data.packing.Packing` arrays: `packing_gather`, ..."""


def video_codes(batch: pa.Table) -> np.ndarray:
    """Each clip's video as a number that only this batch uses, [B] int64: enough to tell clips of one video."""
    return np.unique(batch.column("video_id").to_numpy(zero_copy_only=False), return_inverse=True)[1].astype(np.int64)


def same_video_negatives(videos: torch.Tensor, negatives: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The share of L_CT's negatives (x' and v' of Eq. 3, [B] indices each) that are clips of the anchor's own
    video (`videos` [B], `video_codes`), a 0-d tensor on the device: what a batch shows of how it was drawn, with
    `videos_per_batch`. Under a uniform shuffle of the split the share is about (clips per video - 1) / clips;
    HowTo100M-shaped features read in stored order put 26-28% there (`bench/batch_order.py`; README: how training
    batches are drawn)."""
    return torch.stack([videos[n] == videos for n in negatives]).float().mean()


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
    payload = fit(task, train, spec.optim, spec.resources, splits, place, spec.seed, f"teacher/{spec.name}", final)
    model = task.build_model()
    published = published_weights(payload, spec.train)
    model.load_state_dict(published.weights)
    export = context.scratch / "teacher"
    model.save(export, tokenizer_dir)
    export_logs(final, export)
    description = {"feature_dim": feature_dim, "visual_input": spec.visual_input, "objectives": spec.objectives}
    (export / "teacher.json").write_text(json.dumps(description, indent=2))
    metrics = run_summary(payload["state"], published, time.monotonic() - started)
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
    job_main("teacher")
