"""Shared by the benchmarks: what machine the numbers came from, timing, GPU peaks for MFU, an offline tokenizer."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def peak_tflops() -> float | None:
    """The GPU's dense bf16 peak (`vlkd.flops.PEAK_TFLOPS`, the table training's MFU uses), or None without a GPU
    or for one not in the table."""
    import torch

    from vlkd.flops import device_peak_tflops

    return device_peak_tflops(torch.device("cuda")) if torch.cuda.is_available() else None


def task_step_seconds(task: Any, data: dict[str, Any], cast: Any, repeats: int, device: Any) -> tuple[float, Any]:
    """Seconds per training step (forward and backward) of a stage's own task on one batch, after a warm-up;
    returns the model too, for counting its parameters."""
    step, model = task_step(task, data, cast, device)
    return timed(step, repeats, device), model


def task_step(task: Any, data: dict[str, Any], cast: Any, device: Any) -> tuple[Callable[[], None], Any]:
    """A training step (forward and backward) of a stage's own task on one batch, as a call to time, and the model
    it trains (a new one)."""
    import torch

    model = task.build_model().to(device).train()
    generator = torch.Generator().manual_seed(0)
    return training_step(model, lambda: task.loss(model, data, generator)[0], cast), model


def training_step(model: Any, loss: Callable[[], Any], cast: Any) -> Callable[[], None]:
    """One forward of `loss` (under `cast`) and its backward, the gradients freed after it."""

    def step() -> None:
        with cast:
            value = loss()
        value.backward()
        model.zero_grad(set_to_none=True)

    return step


def fastest_in_turns(steps: dict[str, Callable[[], None]], rounds: int, device: Any) -> dict[str, float]:
    """Seconds of each step: the fastest of `rounds` calls, after a warm-up call of each, the steps taking turns. On
    a machine shared with other work a load that comes and goes falls on every form alike, and the fastest call is
    the one it disturbed least, so forms timed in one run compare."""
    for step in steps.values():
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            best[name] = min(best[name], timed(step, 1, device, warmup=0))
    return best


def timed(step: Callable[[], None], repeats: int, device: Any, warmup: int = 1) -> float:
    """Seconds per call of `step`, after `warmup` calls; waits for the GPU."""
    import torch

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bert_tokenizer(vocab_size: int = 30522) -> Any:
    """A BERT WordPiece tokenizer of `vocab_size` tokens made offline (BERT-base's vocabulary size), for steps
    that only need its special ids and size."""
    from vlkd.data.text import SPECIAL_TOKENS, load_vocab_tokenizer

    tokens = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS)))]
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(tokens) + "\n")
        return load_vocab_tokenizer(vocab, lowercase=True)
