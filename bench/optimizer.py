"""The optimizer step of every training run (`vlkd.optim.build_optimizer`: fused AdamW) against torch's default
AdamW for the same parameters (a Python loop over the tensors on a CPU), same process.

    python -m bench.optimizer [--presets tiny bert-6l-512h bert-12l-768h] [--repeats 20]

Parameters: the teacher model of each preset (its language model and video encoder, what the teacher stage
trains), every gradient set. Ratio = default step / vlkd's step; both runs start from the same weights and
their weights are compared after the timed steps, so the speed-up is of the same update.
"""

from __future__ import annotations

import argparse
import copy

import torch

from bench.common import bert_tokenizer, machine, timed
from bench.train_step import FEATURE_DIM
from vlkd.jobs.teacher import TeacherTask
from vlkd.optim import build_optimizer
from vlkd.specs import parse_spec


def teacher_model(preset: str, device: torch.device) -> tuple[torch.nn.Module, TeacherTask]:
    spec = {"stage": "teacher", "name": "bench", "features": "features/f", "tokenizer": "tokenizer/t"}
    task = TeacherTask(parse_spec({**spec, "model": {"preset": preset}}), bert_tokenizer(), FEATURE_DIM)
    return task.build_model().to(device), task


def torch_default(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """AdamW with the same parameter groups and settings, its implementation left to torch (`fused`/`foreach`
    unset: on a CPU, a loop over the tensors)."""
    groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")} for group in optimizer.param_groups]
    return torch.optim.AdamW(groups)


def bench_preset(preset: str, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per step (`vlkd`, `default`), the largest weight difference after them, the parameter count."""
    model, task = teacher_model(preset, device)
    twin = copy.deepcopy(model)
    result = {}
    for name, net in (("vlkd", model), ("default", twin)):
        generator = torch.Generator(device=device).manual_seed(0)
        for parameter in net.parameters():
            parameter.grad = torch.randn(parameter.shape, generator=generator, device=device)
        optimizer = build_optimizer(task.spec.optim, net)
        if name == "default":
            optimizer = torch_default(optimizer)
        result[name] = timed(optimizer.step, repeats, device)
    result["max_weight_difference"] = max(
        (a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "bert-6l-512h", "bert-12l-768h"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}")
    print(f"{'preset':<15}{'parameters':>12}{'default ms':>12}{'vlkd ms':>10}{'ratio':>8}{'max |dw|':>11}")
    for preset in args.presets:
        r = bench_preset(preset, args.repeats, device)
        times = f"{r['default'] * 1e3:>12.2f}{r['vlkd'] * 1e3:>10.2f}{r['default'] / r['vlkd']:>7.2f}x"
        print(f"{preset:<15}{r['parameters'] / 1e6:>11.2f}M{times}{r['max_weight_difference']:>11.2e}", flush=True)


if __name__ == "__main__":
    main()
