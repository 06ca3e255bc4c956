"""The training loop's GPU paths, each against fp32 eager with a for-each AdamW, same process.

    python -m bench.gpu_paths [--presets bert-12l-768h] [--batch 32 128] [--seq 128] [--frames 16] [--repeats 20]

A whole optimizer step as the training loop takes it (`Loop._micro_step`: the stage's own loss under autocast,
backward, gradient clipping, AdamW step, zero_grad) for the teacher (L_CT + L_MLM over V^T, Sec. 3.2) and for a
student distilled with MLM + NST + CRD (Eq. 4; the frozen teacher's forward included), in five forms:

- fp32: no autocast, AdamW's for-each implementation (the baseline);
- bf16: autocast to bf16 (`train.precision: auto` on a GPU that has it), same optimizer;
- bf16+fused: and the fused AdamW kernel (`vlkd.optim.build_optimizer` on CUDA parameters): the loop's default;
- bf16+fused+compile: and `torch.compile` (`train.compile: true`);
- bf16+fused+cudagraphs: compiled with CUDA graphs (`train.compile: reduce-overhead`): the step's kernels replayed
  in one launch each for forward and backward, what a host-bound step (small batches) lacks.

Per form: seconds per step, tokens/s, speed-up over fp32, model FLOPs utilisation against the device's dense bf16
peak as the training loop logs it (`vlkd.flops`): counted (6 x trainable parameters x tokens) and achieved (the
FLOPs the step runs: `task.flops`, the frozen teacher's forward included), peak GPU memory, and how busy the GPU
is (its kernels' time per step, from torch.profiler, over the step's wall time): what is missing from 100% is time
the GPU waits on the host (Python, kernel launches, the step's host syncs). A form that fails prints its error and
the others still run. On a CPU every form is fp32 (autocast is GPU-only in the loop) and only the timing is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.common import bert_tokenizer, machine, peak_tflops, timed
from bench.kd_step import distill_task, frozen_teacher
from bench.train_step import a_batch, teacher_task
from vlkd.flops import counted_flops, trainable_parameters
from vlkd.model_wrappers import autocast, compile_model
from vlkd.models.frozen_teacher import FrozenTeacher
from vlkd.optim import build_optimizer
from vlkd.specs import OptimSpec, TrainSpec
from vlkd.training_task import TrainingTask

FORMS = {  # name: (precision, fused AdamW, train.compile)
    "fp32": ("fp32", False, False),
    "bf16": ("auto", False, False),
    "bf16+fused": ("auto", True, False),
    "bf16+fused+compile": ("auto", True, True),
    "bf16+fused+cudagraphs": ("auto", True, "reduce-overhead"),
}


def step_of(task: TrainingTask, data: dict[str, Any], form: str, device: torch.device) -> tuple[Callable, nn.Module]:
    """One training step of `task` in `form`, and the model it trains."""
    precision, fused, compile = FORMS[form]
    train = TrainSpec(compile=compile)  # what the loop reads of it: torch.compile's mode, CUDA graphs or not
    mode = train.compile_mode
    model = task.build_model().to(device).train()
    optimizer = (
        build_optimizer(OptimSpec(), model)
        if fused and device.type == "cuda"
        else torch.optim.AdamW(model.parameters(), lr=OptimSpec().lr, foreach=True)
    )
    trained = compile_model(model, mode) if mode else model
    if mode:
        task = with_compiled_teacher(task, mode)
    cast, _ = autocast(precision, device)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        if train.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # as the loop does (`Loop._micro_step`)
        with cast:
            loss, _ = task.loss(trained, data, generator)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, model


def with_compiled_teacher(task: TrainingTask, mode: str) -> TrainingTask:
    """`task` with its frozen teacher (a student's) compiled in `mode`, as the distill stage compiles it under
    `train.compile`; the other forms keep the eager one."""
    frozen = getattr(task, "_frozen", None)
    if frozen is None:
        return task
    compiled = FrozenTeacher(frozen.language_model, frozen.video_bank)
    compiled.compile(mode=mode)
    return dataclasses.replace(task, _frozen=compiled)


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
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, float]:
    step, model = step_of(task, data, form, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Two warm-up steps: CRD's first step (empty memory) takes its own branch, so torch.compile compiles twice.
    seconds = timed(step, args.repeats, device, warmup=2)
    tokens = data["input_ids"].numel()
    result = {"s": seconds, "tokens_per_s": tokens / seconds}
    peak = peak_tflops()
    if peak:
        result["mfu"] = counted_flops(trainable_parameters(model), tokens) / seconds / (peak * 1e12)
        result["mfu_achieved"] = task.flops(data) / seconds / (peak * 1e12)
    if device.type == "cuda":
        result["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        try:
            result["busy"] = kernel_seconds(step, min(args.repeats, 5)) / seconds
        except Exception as error:  # the profiler's failure loses one column, not the step's numbers
            print(f"torch.profiler failed: {type(error).__name__}: {error}", file=sys.stderr)
    return result


def tasks(preset: str, tokenizer: Any, device: torch.device) -> dict[str, TrainingTask]:
    """The two steps: the teacher (unmasked text for L_CT, the paper's) and the NST + CRD student."""
    frozen = frozen_teacher(preset, tokenizer, device)
    return {
        "teacher": teacher_task(preset, tokenizer, "unmasked"),
        "student": distill_task(preset, tokenizer, {"nst": 1.0, "crd": 1.0}, frozen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["bert-12l-768h"])
    parser.add_argument("--batch", type=int, nargs="+", default=[32], help="one or more batch sizes")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    parser.add_argument("--steps", nargs="+", default=["teacher", "student"], choices=["teacher", "student"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}")
    print(f"whole optimizer step, batch x {args.seq} tokens, {args.frames} frames; speed-up over fp32")
    columns = f"{'s/step':>8}{'tok/s':>9}{'speed-up':>9}{'MFU':>7}{'MFU run':>8}{'GiB':>6}{'busy':>6}"
    print(f"{'preset':<15}{'batch':>6} {'step':<9}{'form':<23}{columns}")
    tokenizer = bert_tokenizer()
    for preset in args.presets:
        steps = tasks(preset, tokenizer, device)
        for batch in args.batch:
            data = a_batch(tokenizer, batch, args.seq, args.frames, device)
            for name in args.steps:
                row = f"{preset:<15}{batch:>6} {name:<9}"
                baseline = None
                for form in args.forms:
                    try:
                        r = measure(steps[name], data, form, args, device)
                    except Exception as error:  # one form's failure is a result, the others still run
                        print(f"{row}{form:<23} failed: {type(error).__name__}: {error}"[:400], flush=True)
                        continue
                    finally:
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    baseline = baseline or (r["s"] if form == "fp32" else None)
                    speedup = f"{baseline / r['s']:>8.2f}x" if baseline else f"{'-':>9}"
                    extra = f"{r['mfu']:>7.1%}{r['mfu_achieved']:>8.1%}" if "mfu" in r else ""
                    if "memory_gib" in r:
                        extra += f"{r['memory_gib']:>6.1f}" + (f"{r['busy']:>6.0%}" if "busy" in r else f"{'-':>6}")
                    timing = f"{r['s']:>8.4f}{r['tokens_per_s']:>9.0f}{speedup}{extra}"
                    print(f"{row}{form:<23}{timing}", flush=True)


if __name__ == "__main__":
    main()
