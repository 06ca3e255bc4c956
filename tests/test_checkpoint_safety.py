"""A checkpoint is read with torch's weights-only unpickler: anyone who can write to the store can write one, and
reading it must not run code they put in it. What the trainer saves (weights, optimizer, schedule, random states)
still loads. tests/test_teacher.py resumes real runs from their checkpoints."""

from __future__ import annotations

import dataclasses
import os
import random
import shlex

import numpy as np
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from vlkd.checkpoints import STATE_FILE, load_final, rng_state
from vlkd.errors import VlkdError
from vlkd.train_loop import TrainState


class RunsAShellCommand:
    """What unpickling it does: run `command`, as a pickle can make any function's call."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def trainer_payload() -> dict:
    """A checkpoint's payload as the trainer's `_checkpoint` saves it, after one optimizer step."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {
        "identity": "teacher/t",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "state": dataclasses.asdict(TrainState(step=1, resumed_from=[1])),
        "best_weights": {k: v.clone() for k, v in model.state_dict().items()},
        "rng": [{**rng_state(), "generator": torch.Generator().manual_seed(3).get_state()}],
    }


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    payload = {**trainer_payload(), "model": RunsAShellCommand(f"touch {shlex.quote(str(marker))}")}
    torch.save(payload, tmp_path / STATE_FILE)
    with pytest.raises(VlkdError, match=r"refused to load the checkpoint in .*: it holds \S*system"):
        load_final(tmp_path)
    assert not marker.exists()


def test_what_the_trainer_saves_loads_back_unchanged(tmp_path):
    random.seed(1)
    np.random.seed(2)
    payload = trainer_payload()
    torch.save(payload, tmp_path / STATE_FILE)
    loaded = load_final(tmp_path)
    assert loaded["state"] == payload["state"] and loaded["scheduler"] == payload["scheduler"]
    assert torch.equal(loaded["model"]["weight"], payload["model"]["weight"])
    assert loaded["optimizer"]["param_groups"] == payload["optimizer"]["param_groups"]
    saved_rng, loaded_rng = payload["rng"][0], loaded["rng"][0]
    assert loaded_rng["python"] == saved_rng["python"]
    name, keys, *rest = loaded_rng["numpy"]
    assert name == "MT19937" and np.array_equal(keys, saved_rng["numpy"][1]) and rest == list(saved_rng["numpy"][2:])
    assert torch.equal(loaded_rng["generator"], saved_rng["generator"])
