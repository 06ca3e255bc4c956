"""Stage `distill`: a student language model trained on a `corpus` artifact with MLM plus the KD objectives of
the spec against a frozen `teacher` (Sec. 3.3-3.4), with Ray Train; `kd: {}` is the text-only baseline.

The teacher is loaded on each worker, frozen (eval mode, no gradients, never in the optimizer, bf16 on GPU:
`vlkd.models.frozen_teacher`) and fed the very masked input the student sees. The student's parents are the
teacher, the corpus and its tokenizer.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from vlkd import losses
from vlkd.artifacts import ArtifactStore, Manifest, collect_files
from vlkd.checkpoints import RunPlace, published_weights, run_summary
from vlkd.curves import export_logs
from vlkd.data.corpus import corpus_datasets, pad_sequences
from vlkd.data.ingest import configure_ray_data
from vlkd.distillation import (
    SAME_WIDTH,
    USES_HEAD,
    USES_LOGITS,
    Distillation,
    Widths,
    gradient_norms,
    kd_balance,
    objectives_forward_flops,
    weighted_total,
)
from vlkd.errors import DataError
from vlkd.flops import TRAINED, encoder_forward_flops, linear_forward_flops, mlm_head_forward_flops
from vlkd.masking import draw_masking, prediction_capacity
from vlkd.models.bert import shape_fields
from vlkd.models.frozen_teacher import FrozenTeacher, VideoBank, load_frozen_teacher
from vlkd.refs import ArtifactRef
from vlkd.runtime import JobContext, job_main
from vlkd.specs import DistillSpec
from vlkd.specs.teacher import trained_with
from vlkd.train import fit
from vlkd.training_task import validation_losses

log = logging.getLogger("vlkd.distill")


@dataclass
class DistillTask:
    """The student's objectives for the shared loop (`vlkd.train`)."""

    spec: DistillSpec
    tokenizer: Any
    store: ArtifactStore
    teacher: ArtifactRef | None
    teacher_dim: int | None
    num_data: int
    bank: VideoBank | None = None
    """the voken objective's video bank"""
    init: ArtifactRef | None = None
    """the language model LM^S starts from (`DistillSpec.init`), pinned"""
    sparse_mlm: bool = True
    """the MLM head scores the positions masking drew only (`vlkd.masking.Masking.positions`); False runs it at
    every position, BERT's reference form (`bench.kd_step` times both)"""
    _frozen: FrozenTeacher | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frozen": None}  # each worker loads its own teacher

    @property
    def uses_head(self) -> bool:
        return self.spec.distill_head and bool(USES_HEAD & set(self.spec.kd))

    @property
    def needs_logits(self) -> bool:
        """An objective reads every position's logits: the teacher's MLM head runs, and the student's everywhere."""
        return bool(USES_LOGITS & set(self.spec.kd))

    @property
    def ddp_find_unused(self) -> bool:
        return False

    def build_model(self) -> Distillation:
        """The model training starts from: LM^S from `init`'s weights when the spec names one (the distillation
        head and the objectives' modules start fresh either way)."""
        model = self.new_model()
        if self.init is not None:
            model.student.language_model.load_state_dict(_language_model_weights(self.store, self.init))
        return model

    def new_model(self) -> Distillation:
        """The model's architecture, randomly initialised: what trained weights are loaded into."""
        spec = self.spec
        return Distillation.build(
            spec.model, len(self.tokenizer), spec.kd, spec.kd_options, self._widths(), self.uses_head
        )

    def _widths(self) -> Widths:
        kd_dim = self.teacher_dim if self.uses_head else self.spec.model.hidden_size
        return Widths(kd_dim, self.teacher_dim or kd_dim, self.num_data, len(self.bank.videos) if self.bank else 0)

    def collate(self, batch: pa.Table) -> dict[str, Any]:
        ids, mask = pad_sequences(batch.column("input_ids"), self.tokenizer.pad_token_id, self.spec.max_len)
        special = np.isin(ids, [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]) | (mask == 0)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "special_tokens_mask": torch.from_numpy(special),
        }

    def tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["attention_mask"].sum()

    def flops(self, batch: dict[str, Any]) -> float:
        """One micro-step's FLOPs (`vlkd.flops`, achieved): the student's encoder, MLM head at the positions it
        scores, distillation head and objectives' products, forward and backward; the frozen teacher's forward
        (with its MLM head where logits are read) once."""
        size, length = batch["input_ids"].shape
        shape, vocab, tokens, kd = self.spec.model, len(self.tokenizer), size * length, self.spec.kd
        full = self.needs_logits or not self.sparse_mlm
        scored = tokens if full else prediction_capacity(tokens, self.spec.mlm_probability)
        widths = self._widths()
        student = encoder_forward_flops(shape, size, length) + mlm_head_forward_flops(shape, vocab, scored)
        if self.uses_head:
            student += linear_forward_flops(tokens, shape.hidden_size, shape.hidden_size, widths.kd)
        student += objectives_forward_flops(kd, self.spec.kd_options, widths, size, length)
        if not kd:
            return TRAINED * student
        teacher = self._frozen_teacher(batch["input_ids"].device).shape
        frozen = encoder_forward_flops(teacher, size, length)
        if self.needs_logits:
            frozen += mlm_head_forward_flops(teacher, vocab, tokens)
        return TRAINED * student + frozen

    def _frozen_teacher(self, device: torch.device) -> FrozenTeacher:
        if self._frozen is None:
            compile = self.spec.train.compile_mode
            self._frozen = load_frozen_teacher(self.store, self.teacher, device, self.bank, compile)
        return self._frozen

    def _terms(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(the loss terms, the student's last hidden states): `Distillation.forward` on the masked batch. Masking
        is drawn on the host and sent without waiting (`draw_masking`), so the step queues its GPU work unblocked."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        masking = draw_masking(
            ids, batch["special_tokens_mask"], self.tokenizer.mask_token_id, len(self.tokenizer),
            self.spec.mlm_probability, generator,
        )  # fmt: skip
        masked = masking.input_ids
        positions, labels = (masking.positions, masking.position_labels) if self.sparse_mlm else (None, masking.labels)
        if not self.spec.kd:
            return model(masked, attention, labels, positions=positions)
        teacher = self._frozen_teacher(ids.device)
        teacher_hidden, teacher_logits = teacher(masked, attention, self.needs_logits)  # the same input (Sec. 3.4)
        vokens = losses.assign_vokens(teacher_hidden, teacher.video_bank) if teacher.video_bank is not None else None
        # A generator argument is a graph break under torch.compile: a compiled step draws CRD's negatives from
        # the global RNG (which checkpoints keep); a GPU step does anyway (the generator is the host's).
        eager_cpu = ids.device.type == "cpu" and not self.spec.train.compile
        crd_generator = generator if eager_cpu else None
        return model(masked, attention, labels, teacher_hidden, teacher_logits, vokens, crd_generator, positions)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms, _ = self._terms(model, batch, generator)
        return self._total(terms)

    def loss_and_probes(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """`loss`, and each term's gradient norm at the student's last hidden states (`gradient_norms`): what the
        manifest's `kd_balance` reports, measured on the steps the loop logs only."""
        terms, hidden = self._terms(model, batch, generator)
        return *self._total(terms), gradient_norms(terms, hidden, self.spec.kd)

    def _total(self, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L^S (Eq. 4), and it and every term detached for the log, on the device: read on logged steps only."""
        total = weighted_total(terms, self.spec.kd)
        return total, {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Validation losses and the MLM perplexity."""
        metrics = validation_losses(self, model, batches)
        metrics["val_perplexity"] = float(np.exp(min(metrics.get("val_mlm", float("inf")), 50.0)))
        return metrics


def _tokenizer_of(store: ArtifactStore, ref: ArtifactRef | str) -> ArtifactRef:
    """The tokenizer an artifact was made with (a corpus's or a teacher's parent)."""
    parent = next((p for p in store.manifest(ref).parents if p.startswith("tokenizer/")), None)
    if parent is None:
        raise DataError(f"{ref} names no tokenizer among its parents: was it made by vlkd?")
    return ArtifactRef.parse(parent)


def _check_same_vocabulary(store: ArtifactStore, model: ArtifactRef, corpus_tokenizer: ArtifactRef) -> None:
    """The teacher (or the model LM^S starts from) and the student read the same token ids (Sec. 3.4): their
    tokenizers must have the same vocabulary."""
    model_tokenizer = _tokenizer_of(store, model)

    def vocab(ref: ArtifactRef) -> str | None:
        return next((f.sha256 for f in store.manifest(ref).files if f.path == "vocab.txt"), None)

    if model_tokenizer != corpus_tokenizer and vocab(model_tokenizer) != vocab(corpus_tokenizer):
        raise DataError(
            f"{model} was trained with {model_tokenizer} but the corpus is tokenised with {corpus_tokenizer}: "
            f"rerun the text stage with `tokenizer: {{artifact: {model_tokenizer}}}`"
        )


def _language_model_config(store: ArtifactStore, model: ArtifactRef) -> dict[str, Any]:
    import json

    from vlkd.inputs import open_input
    from vlkd.models.bert import LANGUAGE_MODEL

    return json.loads(open_input(str(model), store).read_bytes(f"{LANGUAGE_MODEL}/config.json"))


def _teacher_width(store: ArtifactStore, teacher: ArtifactRef) -> int:
    return _language_model_config(store, teacher)["hidden_size"]


def _check_init_shape(store: ArtifactStore, init: ArtifactRef, spec: DistillSpec, vocab_size: int) -> None:
    """LM^S can start from `init` only if every weight has the student's shape: say which field differs."""
    config = _language_model_config(store, init)
    wanted = shape_fields(spec.model) | {"vocab_size": vocab_size}
    differ = [
        f"{key} {config.get(key)} (the student's {value})" for key, value in wanted.items() if config.get(key) != value
    ]
    if differ:
        raise DataError(
            f"init: {init}'s language model does not have the student's shape: {', '.join(differ)}; give the "
            "student its model (`model:`) or start from another"
        )


def _language_model_weights(store: ArtifactStore, model: ArtifactRef) -> dict[str, torch.Tensor]:
    """The state dict of an artifact's language model (`transformers` loads it, tied weights and all)."""
    from transformers import BertForMaskedLM

    from vlkd.inputs import open_input
    from vlkd.models.bert import LANGUAGE_MODEL

    source = open_input(str(model), store)
    with tempfile.TemporaryDirectory(prefix="vlkd-init-") as tmp:
        for item in source.files():
            if item.path.startswith(f"{LANGUAGE_MODEL}/"):
                source.fetch(item.path, Path(tmp) / item.path)
        return BertForMaskedLM.from_pretrained(Path(tmp) / LANGUAGE_MODEL).state_dict()


def plan_task(spec: DistillSpec, store: ArtifactStore, tokenizer: Any, num_data: int) -> DistillTask:
    """Check what can only be checked against the artifacts, and describe the task."""
    teacher = store.resolve(spec.teacher) if spec.kd else None  # the baseline has no teacher in its lineage
    teacher_dim = _teacher_width(store, teacher) if teacher else None
    init = store.resolve(spec.init) if spec.init else None
    corpus_tokenizer = _tokenizer_of(store, spec.corpus)
    for model in (teacher, init):  # the models whose token ids the student's input must share
        if model is not None:
            _check_same_vocabulary(store, model, corpus_tokenizer)
    same_width = sorted(SAME_WIDTH & set(spec.kd))
    if not spec.distill_head and teacher_dim not in (None, spec.model.hidden_size) and same_width:
        raise DataError(
            f"{', '.join(same_width)}: the student's states ({spec.model.hidden_size}-d) are compared with the "
            f"teacher's ({teacher_dim}-d) vector by vector: keep distill_head: true, or give the student the "
            "teacher's width"
        )
    if init is not None:
        _check_init_shape(store, init, spec, len(tokenizer))
    bank = None
    if "voken" in spec.kd:
        from vlkd.data.clips import sample_videos
        from vlkd.inputs import open_input

        features = str(store.resolve(spec.kd_options.voken.features))
        videos = sample_videos(open_input(features, store), spec.kd_options.voken.bank_size, spec.seed)
        trained = trained_with(store.manifest(teacher))
        bank = VideoBank(features, tuple(videos), trained.max_frames, trained.visual_input == "middle_frame")
    return DistillTask(spec, tokenizer, store, teacher, teacher_dim, num_data, bank, init)


def run(spec: DistillSpec, context: JobContext) -> list[Manifest]:
    from transformers import BertTokenizerFast

    started = time.monotonic()
    store = context.store
    tokenizer_ref = _tokenizer_of(store, spec.corpus)
    tokenizer_dir = context.scratch / "tokenizer"
    store.fetch(tokenizer_ref, tokenizer_dir)
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    context.start_ray(spec.resources, extra_cpus=spec.driver_cpus)
    configure_ray_data(spec.resources)
    train = spec.train
    splits, info = corpus_datasets(
        store, spec.corpus, spec.resources, train.batch_size, train.shuffle_window, spec.seed
    )
    task = plan_task(spec, store, tokenizer, info.train_sequences)
    final = context.scratch / "final"
    place = RunPlace(store.storage, context.job_id)
    payload = fit(task, train, spec.optim, spec.resources, splits, place, spec.seed, f"student/{spec.name}", final)
    model = task.new_model()
    published = published_weights(payload, spec.train)
    model.load_state_dict(published.weights)
    export = context.scratch / "student"
    description = {
        "kd": spec.kd,
        "distill_head": task.uses_head,
        "teacher": str(task.teacher) if task.teacher else None,
    }
    model.save(export, tokenizer_dir, description)
    export_logs(final, export)
    metrics = run_summary(payload["state"], published, time.monotonic() - started)
    if spec.kd:
        state = payload["state"]
        metrics["kd_balance"] = kd_balance(state["first_logged"], state["last_logged"], spec.kd)
    parents = list(dict.fromkeys(p for p in (task.teacher, task.init, info.ref, tokenizer_ref) if p is not None))
    attributes = {
        "kd": spec.kd or "none (text-only baseline)",
        "teacher": description["teacher"],
        "corpus": str(info.ref),
        **({"init": str(task.init)} if task.init else {}),
    }
    manifest = store.publish(
        "student", spec.name, collect_files([export]), spec=spec, parents=parents, metrics=metrics,
        attributes=attributes, job_id=context.job_id, cost=context.cost(),
    )  # fmt: skip
    log.info("%s: best val loss %.4f at step %d", manifest.ref, metrics["best_val_loss"], metrics["best_step"])
    return [manifest]


if __name__ == "__main__":
    job_main("distill")
