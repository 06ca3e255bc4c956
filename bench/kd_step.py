"""Student step cost of distillation, and NST's matrix form against a per-pair loop, same process.

    python -m bench.kd_step [--presets bert-6l-512h bert-12l-768h] [--batch 8] [--seq 128]

Step: forward + backward of the student with MLM only (the text-only baseline) against MLM + NST + CRD with the
frozen teacher's forward (Eq. 4): the ratio is what distillation costs per step. NST: `vlkd.losses.nst_loss`
(matrix products) against a direct loop over neuron pairs computing Eq. 7 term by term; both values are printed
so the speed-up is of the same number.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import machine
from bench.train_step import timed
from vlkd import losses
from vlkd.distillation import objective_modules
from vlkd.models.bert import bert_config
from vlkd.models.student import Student
from vlkd.specs import KDOptions, ModelShape

VOCAB = 30522


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


def bench_step(preset: str, batch: int, seq: int, device: torch.device) -> dict[str, float]:
    from transformers import BertForMaskedLM

    shape = ModelShape(preset=preset)
    options = KDOptions()
    kd = {"nst": 1.0, "crd": 1.0}
    modules = objective_modules(kd, options, shape.hidden_size, shape.hidden_size, num_data=10**6, bank_size=0)
    student = Student.build(shape, VOCAB, shape.hidden_size, modules).to(device).train()
    baseline = Student.build(shape, VOCAB, None, {}).to(device).train()
    teacher = BertForMaskedLM(bert_config(shape, VOCAB)).to(device).eval().requires_grad_(False)
    ids = torch.randint(1000, VOCAB, (batch, seq), device=device)
    attention = torch.ones(batch, seq, dtype=torch.long, device=device)
    labels = torch.where(torch.rand(batch, seq, device=device) < 0.15, ids, -100)
    mask = attention.bool()

    def kd_step() -> None:
        with torch.no_grad():
            teacher_hidden = teacher(input_ids=ids, attention_mask=attention, output_hidden_states=True).hidden_states[
                -1
            ]
        out = student(ids, attention, teacher_hidden=teacher_hidden)
        loss = losses.mlm_loss(out["logits"], labels) + losses.nst_loss(out["kd"], teacher_hidden, mask) + out["crd"]
        loss.backward()
        student.zero_grad(set_to_none=True)

    def mlm_step() -> None:
        losses.mlm_loss(baseline(ids, attention)["logits"], labels).backward()
        baseline.zero_grad(set_to_none=True)

    return {"mlm": timed(mlm_step, 2, device), "kd": timed(kd_step, 2, device)}


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
    print(f"{'preset':<15}{'MLM s':>8}{'MLM+NST+CRD s':>15}{'ratio':>8}")
    for preset in args.presets:
        r = bench_step(preset, batch, args.seq, device)
        print(f"{preset:<15}{r['mlm']:>8.3f}{r['kd']:>15.3f}{r['kd'] / r['mlm']:>7.2f}x", flush=True)
    fast, fast_s, slow, slow_s = bench_nst(args.seq, args.nst_dim)
    print(f"nst_loss, one example of {args.seq} tokens x {args.nst_dim} neurons:")
    print(f"  matrix form {fast:.6f} in {fast_s * 1e3:.2f} ms; per-pair loop {slow:.6f} in {slow_s * 1e3:.0f} ms")
    print(f"  same value: {abs(fast - slow) < 1e-4}; speed-up {slow_s / fast_s:.0f}x")


if __name__ == "__main__":
    main()
