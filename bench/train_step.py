"""The teacher's training step against a plain BERT MLM step of the same shape, same process.

    python -m bench.train_step [--presets tiny bert-6l-512h] [--batch 8] [--seq 128] [--frames 32]

The teacher step is the stage's own (`TeacherTask.loss`: L_CT + L_MLM, Sec. 3.2, with V^T over the frames), in both
of its forms: `contrastive_text: unmasked` (the paper's reading: LM^T runs on the unmasked text for L_CT and on the
masked text for MLM) and `masked` (the authors' released code: one LM pass serves both terms). The baseline is
transformers' BertForMaskedLM on the masked text only. Overhead = teacher step / MLM step. On a GPU the steps run
in bf16 autocast (as training does) and model FLOPs utilisation (MFU: 6 x parameters x tokens per step against the
device's dense bf16 peak) is reported too.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import bert_tokenizer, machine, peak_tflops, task_step_seconds, timed
from vlkd.jobs.teacher import TeacherTask
from vlkd.models.bert import bert_config
from vlkd.specs import parse_spec
from vlkd.train import autocast

FEATURE_DIM = 2560  # CLIP ViT-B/32 (512) + 3D-ResNeXt (2048)


def teacher_task(preset: str, tokenizer, contrastive_text: str) -> TeacherTask:
    spec = {"stage": "teacher", "name": "bench", "features": "features/f", "tokenizer": "tokenizer/t"}
    spec.update(model={"preset": preset}, contrastive_text=contrastive_text)
    return TeacherTask(parse_spec(spec), tokenizer, FEATURE_DIM)


def a_batch(tokenizer, batch: int, seq: int, frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    special = torch.zeros(batch, seq, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    return {
        "input_ids": torch.randint(1000, len(tokenizer), (batch, seq), generator=generator).to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "special_tokens_mask": special.to(device),
        "features": torch.randn(batch, frames, FEATURE_DIM, generator=generator).to(device),
        "frame_mask": torch.ones(batch, frames, dtype=torch.bool, device=device),
    }


def bench_preset(
    preset: str, batch: int, seq: int, frames: int, repeats: int, device: torch.device
) -> dict[str, float]:
    from transformers import BertForMaskedLM

    tokenizer = bert_tokenizer()
    data = a_batch(tokenizer, batch, seq, frames, device)
    cast, _ = autocast("auto", device)
    seconds, flops = {}, {}
    for form in ("unmasked", "masked"):
        task = teacher_task(preset, tokenizer, form)
        seconds[form], model = task_step_seconds(task, data, cast, repeats, device)
        lm = sum(p.numel() for p in model.language_model.parameters())
        video = sum(p.numel() for p in model.video_encoder.parameters())
        passes = 2 if form == "unmasked" else 1
        flops[form] = 6 * (passes * lm * batch * seq + video * batch * frames)
        del model
    baseline = BertForMaskedLM(bert_config(task.spec.model, len(tokenizer))).to(device).train()
    labels = torch.where(torch.rand(batch, seq, device=device) < 0.15, data["input_ids"], -100)

    def baseline_step() -> None:
        with cast:
            loss = baseline(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=labels).loss
        loss.backward()
        baseline.zero_grad(set_to_none=True)

    seconds["mlm"] = timed(baseline_step, repeats, device)
    flops["mlm"] = 6 * sum(p.numel() for p in baseline.parameters()) * batch * seq
    result = {f"{k}_s": v for k, v in seconds.items()}
    result.update({f"{k}_tokens_per_s": batch * seq / v for k, v in seconds.items()})
    result.update({f"{k}_overhead": seconds[k] / seconds["mlm"] for k in ("unmasked", "masked")})
    peak = peak_tflops()
    if peak:
        result.update({f"{k}_mfu": flops[k] / seconds[k] / (peak * 1e12) for k in seconds})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "bert-6l-512h", "bert-12l-768h"])
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (64 if device.type == "cuda" else 8)
    print(f"machine: {machine()}")
    print(f"batch {batch}, {args.seq} tokens, {args.frames} frames of {FEATURE_DIM}-d features; fwd+bwd")
    print("teacher, two LM passes (the paper's reading) and one (the authors' code), against a BERT MLM step")
    header = f"{'preset':<15}{'2-pass s':>10}{'1-pass s':>10}{'mlm s':>8}{'2-pass':>8}{'1-pass':>8}{'mlm tok/s':>11}"
    print(header + (f"{'MFU 2-pass':>12}{'MFU 1-pass':>12}{'MFU mlm':>9}" if peak_tflops() else ""))
    for preset in args.presets:
        r = bench_preset(preset, batch, args.seq, args.frames, args.repeats, device)
        line = (
            f"{preset:<15}{r['unmasked_s']:>10.3f}{r['masked_s']:>10.3f}{r['mlm_s']:>8.3f}"
            f"{r['unmasked_overhead']:>7.2f}x{r['masked_overhead']:>7.2f}x{r['mlm_tokens_per_s']:>11.0f}"
        )
        if "mlm_mfu" in r:
            line += f"{r['unmasked_mfu']:>12.1%}{r['masked_mfu']:>12.1%}{r['mlm_mfu']:>9.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
