"""Student step cost of distillation, the sparse MLM head against the full one, and NST's matrix form against a
per-pair loop, same process.

    python -m bench.kd_step [--presets bert-6l-512h bert-12l-768h] [--batch 8] [--seq 128]

Step: the distill stage's own step (`DistillTask.loss`, forward and backward) with MLM only (the text-only
baseline) against MLM + NST + CRD (Eq. 4), which includes the frozen teacher's forward on the same masked input:
the ratio is what distillation costs per step. The teacher's forward alone is timed too: the floor of the ratio is
(MLM step + teacher forward) / MLM step. Each step runs in both forms of the MLM head (`DistillTask.sparse_mlm`):
`full`, the transform and vocabulary projection at every position (BERT's reference code), and `sparse`, at the
positions masking drew only (NVIDIA's `dense_seq_output`); the same loss, so the speed-up is of the same step. On a
GPU the steps run in bf16 autocast and the frozen teacher in bf16, as training does. NST: `vlkd.losses.nst_loss`
(matrix products) against a direct loop over neuron pairs computing Eq. 7 term by term; both values are printed so
the speed-up is of the same number.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from bench.common import bert_tokenizer, fastest_in_turns, machine, task_step
from vlkd import losses
from vlkd.jobs.distill import DistillTask
from vlkd.model_wrappers import autocast
from vlkd.models.bert import bert_config
from vlkd.models.frozen_teacher import FrozenTeacher
from vlkd.specs import parse_spec


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


STEPS = {"mlm": {}, "kd": {"nst": 1.0, "crd": 1.0}}
"""the text-only baseline's step and the paper's (Eq. 4), by their objectives"""
FORMS = {"full": False, "sparse": True}
"""the MLM head's forms, by `DistillTask.sparse_mlm`"""


def distill_task(
    preset: str, tokenizer, kd: dict[str, float], teacher: FrozenTeacher | None, sparse_mlm: bool = True
) -> DistillTask:
    spec = {"stage": "distill", "name": "bench", "corpus": "corpus/c", "model": {"preset": preset}, "kd": kd}
    spec.update(teacher="teacher/t" if kd else None, kd_options={"crd": {"buffer_size": 4096, "num_negatives": 4096}})
    width = teacher.language_model.config.hidden_size if teacher else None
    spec = parse_spec(spec)
    return DistillTask(spec, tokenizer, None, None, width, num_data=10**6, sparse_mlm=sparse_mlm, _frozen=teacher)


def frozen_teacher(preset: str, tokenizer, device: torch.device) -> FrozenTeacher:
    """A random-init teacher LM of the preset's shape, frozen and (on a GPU) in bf16, as the distill stage loads it."""
    from transformers import BertForMaskedLM

    spec = distill_task(preset, tokenizer, {}, None).spec
    language_model = BertForMaskedLM(bert_config(spec.model, len(tokenizer))).to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        language_model.to(torch.bfloat16)
    return FrozenTeacher(language_model)


def bench_step(preset: str, batch: int, seq: int, device: torch.device, rounds: int) -> dict[str, float]:
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

    def step(kd: dict[str, float], sparse_mlm: bool) -> Callable[[], None]:
        task = distill_task(preset, tokenizer, kd, teacher if kd else None, sparse_mlm)
        return task_step(task, data, cast, device)[0]

    steps = {f"{name}_{form}": step(kd, sparse) for name, kd in STEPS.items() for form, sparse in FORMS.items()}
    return fastest_in_turns({"teacher": teacher_forward, **steps}, rounds, device)


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
    parser.add_argument("--rounds", type=int, default=3, help="timed steps of each form, the fastest kept")
    parser.add_argument("--nst-dim", type=int, default=64, help="neurons for the per-pair loop (it is slow)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (64 if device.type == "cuda" else 8)
    print(f"machine: {machine()}")
    print(f"student step, batch {batch} x {args.seq} tokens, fwd+bwd (teacher fwd included for KD)")
    header = f"{'MLM s':>8}{'MLM+NST+CRD s':>15}{'teacher fwd s':>15}{'ratio':>8}{'floor':>8}"
    print(f"{'preset':<15}{'MLM head':<10}{header}")
    for preset in args.presets:
        r = bench_step(preset, batch, args.seq, device, args.rounds)
        for form in FORMS:
            mlm, kd = r[f"mlm_{form}"], r[f"kd_{form}"]
            ratio, floor = kd / mlm, (mlm + r["teacher"]) / mlm
            times = f"{mlm:>8.3f}{kd:>15.3f}{r['teacher']:>15.3f}"
            print(f"{preset:<15}{form:<10}{times}{ratio:>7.2f}x{floor:>7.2f}x", flush=True)
        gain = {step: r[f"{step}_full"] / r[f"{step}_sparse"] for step in ("mlm", "kd")}
        print(f"{'':<15}sparse head: MLM step {gain['mlm']:.2f}x, MLM+NST+CRD step {gain['kd']:.2f}x as fast as full")
    fast, fast_s, slow, slow_s = bench_nst(args.seq, args.nst_dim)
    print(f"nst_loss, one example of {args.seq} tokens x {args.nst_dim} neurons:")
    print(f"  matrix form {fast:.6f} in {fast_s * 1e3:.2f} ms; per-pair loop {slow:.6f} in {slow_s * 1e3:.0f} ms")
    print(f"  same value: {abs(fast - slow) < 1e-4}; speed-up {slow_s / fast_s:.0f}x")


if __name__ == "__main__":
    main()
