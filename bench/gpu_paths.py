"""The training loop's GPU paths, each against fp32 eager with a for-each AdamW, same process.

    python -m bench.gpu_paths [--presets bert-12l-768h] [--batch 32] [--seq 128] [--frames 16] [--repeats 20]

A whole optimizer step as the training loop takes it (`Loop._micro_step`: the stage's own loss under autocast,
backward, gradient clipping, AdamW step, zero_grad) for the teacher (L_CT + L_MLM over V^T, Sec. 3.2) and for a
student distilled with MLM + NST + CRD (Eq. 4; the frozen teacher's forward included), in four forms:

- fp32: no autocast, AdamW's for-each implementation (the baseline);
- bf16: autocast to bf16 (`train.precision: auto` on a GPU that has it), same optimizer;
- bf16+fused: and the fused AdamW kernel (`vlkd.optim.build_optimizer` on CUDA parameters): the loop's default;
- bf16+fused+compile: and `torch.compile` (`train.compile: true`).

Per form: seconds per step, tokens/s, speed-up over fp32, model FLOPs utilisation against the device's dense bf16
peak (6 x parameters x tokens trained, 2 x for the frozen teacher's forward), peak GPU memory, and how busy the GPU
is (its kernels' time per step, from torch.profiler, over the step's wall time): what is missing from 100% is time
the GPU waits on the host (Python, kernel launches, the step's host syncs). A form that fails prints its error and
the others still run. On a CPU every form is fp32 (autocast is GPU-only in the loop) and only the timing is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.common import bert_tokenizer, machine, peak_tflops, timed
from bench.kd_step import distill_task, frozen_teacher
from bench.train_step import a_batch, teacher_task
from vlkd.optim import build_optimizer
from vlkd.specs import OptimSpec
from vlkd.train import TrainingTask, autocast, compile_model

FORMS = {  # name: (precision, fused AdamW, torch.compile)
    "fp32": ("fp32", False, False),
    "bf16": ("auto", False, False),
    "bf16+fused": ("auto", True, False),
    "bf16+fused+compile": ("auto", True, True),
}


def step_of(task: TrainingTask, data: dict[str, Any], form: str, device: torch.device) -> tuple[Callable, nn.Module]:
    """One training step of `task` in `form`, and the model it trains."""
    precision, fused, compiled = FORMS[form]
    model = task.build_model().to(device).train()
    optimizer = (
        build_optimizer(OptimSpec(), model)
        if fused and device.type == "cuda"
        else torch.optim.AdamW(model.parameters(), lr=OptimSpec().lr, foreach=True)
    )
    trained = compile_model(model) if compiled else model
    cast, _ = autocast(precision, device)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with cast:
            loss, _ = task.loss(trained, data, generator)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, model


def kernel_seconds(step: Callable[[], None], repeats: int) -> float:
    """Seconds of GPU kernel time per step, read from torch.profiler over `repeats` steps."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / repeats


def measure(
    task: TrainingTask,
    data: dict[str, Any],
    form: str,
    flops_of: Callable[[nn.Module], float],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, float]:
    step, model = step_of(task, data, form, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Two warm-up steps: CRD's first step (empty memory) takes its own branch, so torch.compile compiles twice.
    seconds = timed(step, args.repeats, device, warmup=2)
    result = {"s": seconds, "tokens_per_s": args.batch * args.seq / seconds}
    peak = peak_tflops()
    if peak:
        result["mfu"] = flops_of(model) / seconds / (peak * 1e12)
    if device.type == "cuda":
        result["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        try:
            result["busy"] = kernel_seconds(step, min(args.repeats, 5)) / seconds
        except Exception as error:  # the profiler's failure loses one column, not the step's numbers
            print(f"torch.profiler failed: {type(error).__name__}: {error}", file=sys.stderr)
    return result


def tasks(
    preset: str, tokenizer: Any, args: argparse.Namespace, device: torch.device
) -> dict[str, tuple[TrainingTask, Callable[[nn.Module], float]]]:
    """The two steps and their model FLOPs per step."""
    tokens = args.batch * args.seq
    teacher = teacher_task(preset, tokenizer, "unmasked")
    frozen = frozen_teacher(preset, tokenizer, device)
    frozen_params = sum(p.numel() for p in frozen.language_model.parameters())

    def teacher_flops(model: nn.Module) -> float:
        lm = sum(p.numel() for p in model.language_model.parameters())
        video = sum(p.numel() for p in model.video_encoder.parameters())
        return 6 * (2 * lm * tokens + video * args.batch * args.frames)  # two LM passes: unmasked and masked text

    def student_flops(model: nn.Module) -> float:
        return 6 * sum(p.numel() for p in model.parameters()) * tokens + 2 * frozen_params * tokens

    student = distill_task(preset, tokenizer, {"nst": 1.0, "crd": 1.0}, frozen)
    return {"teacher": (teacher, teacher_flops), "student": (student, student_flops)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["bert-12l-768h"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    parser.add_argument("--steps", nargs="+", default=["teacher", "student"], choices=["teacher", "student"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}")
    print(f"whole optimizer step, batch {args.batch} x {args.seq} tokens, {args.frames} frames; speed-up over fp32")
    print(
        f"{'preset':<15}{'step':<9}{'form':<20}{'s/step':>8}{'tok/s':>9}{'speed-up':>9}{'MFU':>7}{'GiB':>6}{'busy':>6}"
    )
    tokenizer = bert_tokenizer()
    for preset in args.presets:
        data = a_batch(tokenizer, args.batch, args.seq, args.frames, device)
        for name, (task, flops_of) in tasks(preset, tokenizer, args, device).items():
            if name not in args.steps:
                continue
            baseline = None
            for form in args.forms:
                try:
                    r = measure(task, data, form, flops_of, args, device)
                except Exception as error:  # one form's failure is a result, the others still run
                    print(f"{preset:<15}{name:<9}{form:<20} failed: {type(error).__name__}: {error}"[:400], flush=True)
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                baseline = baseline or (r["s"] if form == "fp32" else None)
                speedup = f"{baseline / r['s']:>8.2f}x" if baseline else f"{'-':>9}"
                extra = f"{r['mfu']:>7.1%}" if "mfu" in r else ""
                if "memory_gib" in r:
                    extra += f"{r['memory_gib']:>6.1f}" + (f"{r['busy']:>6.0%}" if "busy" in r else f"{'-':>6}")
                print(
                    f"{preset:<15}{name:<9}{form:<20}{r['s']:>8.4f}{r['tokens_per_s']:>9.0f}{speedup}{extra}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
