"""A training run's checkpoints: where they live (`checkpoints/<job id>/` in the store), saving and finding them
(Ray Train persists them, except in its local mode, where `Checkpoints` does), reading one without running its
code, and what a finished run publishes (its weights, their metrics, the run's summary).

The loop (`vlkd.train_loop`) writes a payload of `STATE_FILE` per checkpoint: model, optimizer, scheduler, grad scaler,
`TrainState`, best weights and every rank's random state, everything a resumed run needs to go on as the
uninterrupted one would have.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlkd.errors import VlkdError
from vlkd.joblog import CHECKPOINT_PREFIX
from vlkd.specs import TrainSpec
from vlkd.storage import Storage

STATE_FILE = "state.pt"
COMPLETE = ".complete"
"""written last into a checkpoint the loop uploads itself: one without it was interrupted and is never restored"""


@dataclass
class RunPlace:
    """Where a run keeps its checkpoints: `checkpoints/<job id>` in the store."""

    storage: Storage
    job_id: str

    @property
    def prefix(self) -> str:
        return CHECKPOINT_PREFIX.format(job_id=self.job_id)


def rng_state() -> dict[str, Any]:
    """This process's random state (Python's, NumPy's, torch's, CUDA's), which a checkpoint keeps for each rank."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoints:
    """Save and find checkpoints; Ray Train persists them unless it runs in local mode, where this does."""

    def __init__(self, place: RunPlace, keep: int, local_mode: bool) -> None:
        self.place = place
        self.keep = keep
        self.local_mode = local_mode

    def restore(self, into: Path) -> bool:
        """Copy the latest checkpoint into `into`; False when the run has none yet."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                shutil.copytree(directory, into, dirs_exist_ok=True)
            return True
        return self.local_mode and self.download_latest(into)

    def save(self, directory: Path, step: int, metrics: dict[str, float], is_writer: bool) -> None:
        import ray.train
        from ray.train import Checkpoint

        if self.local_mode:
            if is_writer:
                self._upload(directory, step)
            ray.train.report(metrics)
        else:  # every rank reports; Ray keeps rank 0's directory
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(directory)) if is_writer else None)

    def _local_steps(self) -> list[str]:
        storage, prefix = self.place.storage, self.place.prefix
        names = [c for c in storage.children(prefix) if c.startswith("step-")]
        return sorted(n for n in names if storage.exists(f"{prefix}/{n}/{COMPLETE}"))

    def _upload(self, directory: Path, step: int) -> None:
        storage, prefix = self.place.storage, f"{self.place.prefix}/step-{step:09d}"
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            storage.upload(f"{prefix}/{path.relative_to(directory).as_posix()}", path)
        storage.write_bytes(f"{prefix}/{COMPLETE}", b"")  # last: an interrupted upload is never restored
        for old in self._local_steps()[: -self.keep]:
            storage.delete_prefix(f"{self.place.prefix}/{old}")

    def download_latest(self, into: Path) -> bool:
        steps = self._local_steps()
        if not steps:
            return False
        prefix = f"{self.place.prefix}/{steps[-1]}"
        for info in self.place.storage.list(prefix):
            relative = info.key[len(prefix) + 1 :]
            if relative != COMPLETE:
                (into / relative).parent.mkdir(parents=True, exist_ok=True)
                self.place.storage.download(info.key, into / relative)
        return True


def load_payload(path: Path, checkpoint: str) -> dict[str, Any]:
    """A checkpoint's payload, read with torch's weights-only unpickler: tensors, Python's plain values and NumPy's
    random state (an array) only. Anyone who can write to the store can write a checkpoint; one that names anything
    else (a function to call while unpickling) is refused, so reading it never runs its code."""
    # NumPy's random state holds its MT19937 keys as a uint32 array; an array unpickles with numpy's _reconstruct,
    # which numpy 1 and 2 keep in different modules.
    numpy_random_state = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np.empty(0).__reduce__()[0]]
    try:
        with torch.serialization.safe_globals(numpy_random_state):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)|got <class '([^']+)'>", str(error))
        held = next(name for name in found.groups() if name) if found else "an object"
        raise VlkdError(
            f"refused to load {checkpoint}: it holds {held}, not only tensors and plain data, so vlkd did not write "
            "it; find out who can write to the store, and delete the checkpoint"
        ) from None


def load_final(directory: Path) -> dict[str, Any]:
    """The final checkpoint's payload: `model` (last weights), `best_weights`, `state`."""
    return load_payload(directory / STATE_FILE, f"the checkpoint in {directory}")


@dataclass(frozen=True)
class Published:
    """The weights a finished run publishes, their validation metrics and the step they are from."""

    weights: dict[str, torch.Tensor]
    metrics: dict[str, float]
    step: int


def published_weights(payload: dict[str, Any], train: TrainSpec) -> Published:
    """The best weights when training stops on validation (`patience`, the teacher's "until it converges", Sec. 4.3),
    else the last (a fixed budget, so students and their baseline compare at equal steps)."""
    state = payload["state"]
    if train.patience is not None and payload["best_weights"] is not None:
        return Published(payload["best_weights"], state["best_metrics"], state["best_step"])
    return Published(payload["model"], state["last_metrics"], state["step"])


def run_summary(state: dict[str, Any], published: Published, seconds: float) -> dict[str, Any]:
    """The manifest metrics of a training run: the published weights' validation metrics and step, how it ran."""
    return {
        **{k: round(v, 4) for k, v in published.metrics.items()},
        "best_val_loss": round(state["best_val"], 4),
        "best_step": state["best_step"],
        "published_step": published.step,
        "steps": state["step"],
        "stopped_early": state["stopped_early"],
        "resumed_from": state["resumed_from"],
        **{f"peak_{k}": round(v, 1) for k, v in state["peak"].items()},
        "seconds": round(seconds, 1),
    }
