"""Finetune a pretrained student or teacher on a downstream task and score it on the task's dev files
(Sec. 4.1, 4.3: AdamW, linear warm-up and decay, `FinetuneSpec`'s epochs, lr and batch size).

The model directory is a `save_pretrained` BertForMaskedLM that also holds its tokenizer; the task's head
(sequence classification, question answering or multiple choice, by the task's kind) is new, the encoder the
pretrained one.

Two levels of API:
- `finetune(...)` trains and scores one task: the fields of its run record (`run_fields`).
- `train(...)` returns the trained model in memory (`Finetuned`) and `evaluate(finetuned, task, folder)` scores
  it on any task it can score (`Scored`). GLUE's diagnostic has no training set: train on MNLI once, then
  `evaluate(mnli, "mnli", mnli_dir)` and `evaluate(mnli, "glue_diagnostic", diagnostic_dir)`.
A run is deterministic for its seed on a given device: the seed sets the new head's initial weights, dropout
and the order of the training examples.

Every run also records how it trained, so a report can explain a number (`Curves`): its training loss, and its
main metric on dev after every epoch (one extra pass over the dev set per epoch, forward only: a few percent of
an epoch of training on GLUE's splits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vlkd.errors import NotFoundError, VlkdError
from vlkd.evaluation import choice, classification, qa
from vlkd.evaluation.batches import Feature, collate
from vlkd.evaluation.scoring import Scored, main_score, score_predictions
from vlkd.evaluation.tasks import Kind, Task, get_task, read_eval, read_train
from vlkd.optim import build_optimizer, build_scheduler
from vlkd.specs import OptimSpec
from vlkd.specs.evaluate import FinetuneSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Progress = Callable[[int, int, float], None]
"""(optimizer steps done, steps in all, this step's loss), called after every step."""

# Hugging Face's Trainer clips at 1.0 (max_grad_norm), as the finetuning scripts of BERT and vokenization do.
GRAD_CLIP = 1.0
LOSS_POINTS = 100
"""The training loss is logged as its mean over each of about this many equal windows of a run's steps (as
Hugging Face's Trainer logs the mean over `logging_steps`): a curve of bounded size however long the run."""


@dataclass(frozen=True)
class Head:
    """What a kind of task needs: its model on the pretrained encoder, its training features, its predictions."""

    build_model: Callable[[Path, Task], tuple[nn.Module, dict[str, Any]]]
    """the model and transformers' loading info (`output_loading_info`)"""
    encode: Callable[..., list[Feature]]
    predict: Callable[..., list[Any]]


HEADS: dict[Kind, Head] = {
    "classification": Head(classification.build_model, classification.encode, classification.predict),
    "extractive_qa": Head(qa.build_model, qa.encode, qa.predict),
    "multiple_choice": Head(choice.build_model, choice.encode, choice.predict),
}


@dataclass
class Curves:
    """How a run trained."""

    loss: list[list[float]]
    """[step, mean training loss over the window of steps ending there]"""
    dev: list[list[float]]
    """[epoch, main metric on dev] after each epoch (a fractional epoch where `max_steps` stopped one early)"""


@dataclass
class Finetuned:
    """A model finetuned on `task`, in memory, with what scoring it needs."""

    task: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    hp: FinetuneSpec
    device: str
    examples: int
    """training examples"""
    seconds: float
    """training time, with the per-epoch scoring of dev"""
    curves: Curves


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import BertTokenizerFast

    model_dir = Path(model_dir)
    missing = [name for name in ("config.json", "tokenizer.json") if not (model_dir / name).is_file()]
    if missing:
        raise NotFoundError(
            f"{model_dir} lacks {', '.join(missing)}: expected a save_pretrained BERT directory that also holds its "
            "tokenizer (a student or teacher artifact)"
        )
    return BertTokenizerFast.from_pretrained(model_dir)


# Where a BERT task model keeps the pretrained encoder's weights: all of them must come from the checkpoint.
ENCODER_WEIGHTS = ("bert.embeddings.", "bert.encoder.")


def _under_new_head(head: Head, model_dir: Path, task: Task) -> nn.Module:
    """The pretrained encoder under the task's new head. transformers reports, on every run, the new head's weights
    as missing and the pretraining head's as unexpected (with a progress bar): that is what finetuning does, so it
    stays out of the job's log. Where that report mattered, an encoder weight missing from the checkpoint (which
    would be finetuned from its random init), the run fails instead."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        model, loading = head.build_model(model_dir, task)
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    missing = sorted(name for name in loading["missing_keys"] if name.startswith(ENCODER_WEIGHTS))
    if missing:
        raise VlkdError(
            f"{model_dir} lacks {len(missing)} of the encoder's weights ({', '.join(missing[:3])}, ...): "
            "finetune a student or teacher artifact's language model, saved whole"
        )
    return model


def train(
    model_dir: Path,
    task: str,
    data_dir: Path,
    hp: FinetuneSpec,
    seed: int,
    device: str = "cpu",
    progress: Progress | None = None,
) -> Finetuned:
    """Finetune the model in `model_dir` on the training file of `task` in `data_dir` (the task's official
    files, as released), scoring its main dev file after every epoch for the run's curves."""
    definition = get_task(task)
    head = HEADS[definition.kind]
    examples = read_train(definition, Path(data_dir))
    tokenizer = load_tokenizer(model_dir)
    features = head.encode(tokenizer, examples, definition, hp.max_len)
    dev = read_eval(definition, Path(data_dir))[definition.main_eval]
    started = time.perf_counter()
    torch.manual_seed(seed)  # the new head's weights, then dropout
    model = _under_new_head(head, Path(model_dir), definition).to(device)
    curves = Curves(loss=[], dev=[])

    def score_dev(epoch: float) -> None:
        predictions = head.predict(model, tokenizer, dev, definition, hp.max_len, hp.batch_size, device)
        curves.dev.append([round(epoch, 3), main_score(definition, predictions, dev)])
        model.train()

    order = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        features,
        batch_size=hp.batch_size,
        shuffle=True,
        generator=order,
        collate_fn=partial(collate, pad_id=tokenizer.pad_token_id),
    )
    curves.loss = _fit(model, loader, hp, device, progress, score_dev)
    seconds = time.perf_counter() - started
    return Finetuned(task, model, tokenizer, hp, device, len(examples), seconds, curves)


class _LossWindows:
    """The mean training loss over consecutive windows of `every` steps, the last one possibly shorter; summed on
    the device so that logging adds no synchronisation per step."""

    def __init__(self, total: int) -> None:
        self.every = max(1, math.ceil(total / LOSS_POINTS))
        self.points: list[list[float]] = []
        self._sum: torch.Tensor | float = 0.0
        self._steps = 0

    def add(self, step: int, loss: torch.Tensor, last: bool) -> None:
        self._sum = self._sum + loss.detach()
        self._steps += 1
        if self._steps == self.every or last:
            self.points.append([step, round(float(self._sum) / self._steps, 5)])
            self._sum, self._steps = 0.0, 0


def finetune_optim(hp: FinetuneSpec) -> OptimSpec:
    """The optimizer settings of a finetuning run: AdamW with `hp`'s lr, weight decay, epsilon and warm-up."""
    return OptimSpec(lr=hp.lr, weight_decay=hp.weight_decay, eps=hp.eps, warmup_fraction=hp.warmup_fraction)


def _fit(
    model: nn.Module,
    loader: DataLoader,
    hp: FinetuneSpec,
    device: str,
    progress: Progress | None,
    after_epoch: Callable[[float], None],
) -> list[list[float]]:
    """Train; call `after_epoch` with the epoch reached after each one (and where `max_steps` stops); return
    the logged training loss."""
    total = min(hp.epochs * len(loader), hp.max_steps or math.inf)
    optim = finetune_optim(hp)
    optimizer = build_optimizer(optim, model)
    scheduler = build_scheduler(optim, optimizer, total)
    losses = _LossWindows(total)
    model.train()
    step = 0
    for _ in range(hp.epochs):
        for batch in loader:
            loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.add(step, loss, last=step == total)
            if progress is not None:
                progress(step, total, loss.item())
            if step == total:
                break
        after_epoch(step / len(loader))
        if step == total:
            break
    return losses.points


def evaluate(finetuned: Finetuned, task: str, data_dir: Path) -> Scored:
    """Score `finetuned` on the evaluation files of `task` in `data_dir`: the task it was trained on, or one
    scored with that task's model (glue_diagnostic with an MNLI model). Metrics are percentages."""
    definition = get_task(task)
    if definition.trained_on != finetuned.task:
        raise VlkdError(
            f"task {task} is scored with a model finetuned on {definition.trained_on}, "
            f"not on {finetuned.task}: train on {definition.trained_on} first"
        )
    head, hp = HEADS[definition.kind], finetuned.hp
    examples = read_eval(definition, Path(data_dir))
    predictions = {
        prefix: head.predict(
            finetuned.model, finetuned.tokenizer, file_examples, definition, hp.max_len, hp.batch_size, finetuned.device
        )
        for prefix, file_examples in examples.items()
    }
    return score_predictions(definition, predictions, examples)


def run_fields(finetuned: Finetuned, scored: Scored, task: str) -> dict[str, Any]:
    """What a run record keeps of `finetuned` scored on `task`. A task scored with another task's model (GLUE's
    diagnostic) has no curves of its own (they are that task's run's)."""
    own = task == finetuned.task
    curves = finetuned.curves if own else Curves([], [])
    return {
        "task": task,
        "metrics": scored.metrics,
        "examples": finetuned.examples,
        "seconds": round(finetuned.seconds, 1),
        "loss_curve": curves.loss,
        "dev_curve": curves.dev,
        "predicted": scored.predicted,
        "correct": scored.correct,
        "clusters": scored.clusters,
        "subsets": scored.subsets,
        "labels": scored.labels,
        "gold": scored.gold,
    }


def finetune(
    model_dir: Path,
    task: str,
    data_dir: Path,
    hp: FinetuneSpec,
    seed: int,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on `task` and score on its dev files: `run_fields` (metrics in percent, curves, outcomes)."""
    finetuned = train(model_dir, task, data_dir, hp, seed, device, progress)
    return run_fields(finetuned, evaluate(finetuned, task, data_dir), task)
