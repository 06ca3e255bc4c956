"""Student step cost of distillation, and NST's matrix form against a per-pair loop, same process.

    python -m bench.kd_step [--presets bert-6l-512h bert-12l-768h] [--batch 8] [--seq 128]

Step: the distill stage's own step (`DistillTask.loss`, forward and backward) with MLM only (the text-only
baseline) against MLM + NST + CRD (Eq. 4), which includes the frozen teacher's forward on the same masked input:
the ratio is what distillation costs per step. The teacher's forward alone is timed too: the floor of the ratio is
(MLM step + teacher forward) / MLM step. On a GPU the steps run in bf16 autocast and the frozen teacher in bf16,
as training does. NST: `vlkd.losses.nst_loss` (matrix products) against a direct loop over neuron pairs computing
Eq. 7 term by term; both values are printed so the speed-up is of the same number.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import bert_tokenizer, machine, task_step_seconds, timed
from vlkd import losses
from vlkd.jobs.distill import DistillTask, FrozenTeacher
from vlkd.models.bert import bert_config
from vlkd.specs import parse_spec
from vlkd.train import autocast


def nst_by_pairs(student: torch.Tensor, teacher: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Eq. 7 for one example [L, D] by a loop over neuron pairs (columns L2-normalised first)."""
    s = torch.nn.functional.normalize(student, dim=0)
    t = torch.nn.functional.normalize(teacher, dim=0)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((a - b) ** 2).sum() / (2 * sigma**2))

    d_s, d_t = s.shape[1], t.shape[1]
    ss = sum(kernel(s[:, i], s[:, j]) for i in range(d_s) for j in range(d_s)) / d_s**2
    tt = sum(kernel(t[:, i], t[:, j]) for i in range(d_t) for j in range(d_t)) / d_t**2
    st = sum(kernel(s[:, i], t[:, j]) for i in range(d_s) for j in range(d_t)) / (d_s * d_t)
    return ss + tt - 2 * st


def distill_task(preset: str, tokenizer, kd: dict[str, float], teacher: FrozenTeacher | None) -> DistillTask:
    spec = {"stage": "distill", "name": "bench", "corpus": "corpus/c", "model": {"preset": preset}, "kd": kd}
    spec.update(teacher="teacher/t" if kd else None, kd_options={"crd": {"buffer_size": 4096, "num_negatives": 4096}})
    width = teacher.language_model.config.hidden_size if teacher else None
    return DistillTask(parse_spec(spec), tokenizer, None, None, width, num_data=10**6, _frozen=teacher)


def frozen_teacher(preset: str, tokenizer, device: torch.device) -> FrozenTeacher:
    """A random-init teacher LM of the preset's shape, frozen and (on a GPU) in bf16, as the distill stage loads it."""
    from transformers import BertForMaskedLM

    spec = distill_task(preset, tokenizer, {}, None).spec
    language_model = BertForMaskedLM(bert_config(spec.model, len(tokenizer))).to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        language_model.to(torch.bfloat16)
    return FrozenTeacher(language_model)


def bench_step(preset: str, batch: int, seq: int, device: torch.device) -> dict[str, float]:
    tokenizer = bert_tokenizer()
    teacher = frozen_teacher(preset, tokenizer, device)
    ids = torch.randint(1000, len(tokenizer), (batch, seq), device=device)
    special = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    special[:, 0] = special[:, -1] = True
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "special_tokens_mask": special}
    cast, _ = autocast("auto", device)

    def teacher_forward() -> None:
        with cast:
            teacher(ids, data["attention_mask"], logits=False)

    return {
        "mlm": task_step_seconds(distill_task(preset, tokenizer, {}, None), data, cast, 2, device)[0],
        "kd": task_step_seconds(
            distill_task(preset, tokenizer, {"nst": 1.0, "crd": 1.0}, teacher), data, cast, 2, device
        )[0],
        "teacher": timed(teacher_forward, 2, device),
    }


def bench_nst(length: int, dim: int) -> tuple[float, float, float, float]:
    student, teacher = torch.randn(1, length, dim), torch.randn(1, length, dim)
    mask = torch.ones(1, length, dtype=torch.bool)
    fast = losses.nst_loss(student, teacher, mask).item()  # warm-up
    start = time.perf_counter()
    for _ in range(20):
        losses.nst_loss(student, teacher, mask)
    fast_s = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    slow = nst_by_pairs(student[0], teacher[0]).item()
    return fast, fast_s, slow, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["bert-6l-512h", "bert-12l-768h"])
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--nst-dim", type=int, default=64, help="neurons for the per-pair loop (it is slow)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (64 if device.type == "cuda" else 8)
    print(f"machine: {machine()}")
    print(f"student step, batch {batch} x {args.seq} tokens, fwd+bwd (teacher fwd included for KD)")
    print(f"{'preset':<15}{'MLM s':>8}{'MLM+NST+CRD s':>15}{'teacher fwd s':>15}{'ratio':>8}{'floor':>8}")
    for preset in args.presets:
        r = bench_step(preset, batch, args.seq, device)
        ratio, floor = r["kd"] / r["mlm"], (r["mlm"] + r["teacher"]) / r["mlm"]
        times = f"{r['mlm']:>8.3f}{r['kd']:>15.3f}{r['teacher']:>15.3f}"
        print(f"{preset:<15}{times}{ratio:>7.2f}x{floor:>7.2f}x", flush=True)
    fast, fast_s, slow, slow_s = bench_nst(args.seq, args.nst_dim)
    print(f"nst_loss, one example of {args.seq} tokens x {args.nst_dim} neurons:")
    print(f"  matrix form {fast:.6f} in {fast_s * 1e3:.2f} ms; per-pair loop {slow:.6f} in {slow_s * 1e3:.0f} ms")
    print(f"  same value: {abs(fast - slow) < 1e-4}; speed-up {slow_s / fast_s:.0f}x")


if __name__ == "__main__":
    main()
