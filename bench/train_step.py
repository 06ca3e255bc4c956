"""Teacher training step against a plain BERT MLM step of the same shape, same process.

    python -m bench.train_step [--presets tiny bert-6l-512h] [--batch 8] [--seq 128] [--frames 32]

The teacher step is L_CT + L_MLM (Sec. 3.2): the LM runs twice (unmasked text for the contrastive term, masked
text for MLM) and V^T runs over the frames; the baseline is transformers' BertForMaskedLM on the masked text only.
The ratio is the contrastive branch's overhead. On a GPU, bf16 autocast is used and model FLOPs utilisation
(MFU, 6 x parameters x tokens per step against the device's peak) is reported too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from bench.common import machine
from vlkd import losses
from vlkd.models.bert import bert_config
from vlkd.models.teacher import Teacher
from vlkd.specs import ModelShape

VOCAB = 30522
FEATURE_DIM = 2560  # CLIP ViT-B/32 (512) + 3D-ResNeXt (2048)
# Dense bf16 peak TFLOP/s by device name fragment, for MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def timed(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_preset(
    preset: str, batch: int, seq: int, frames: int, repeats: int, device: torch.device
) -> dict[str, float]:
    from transformers import BertForMaskedLM

    shape = ModelShape(preset=preset)
    teacher = Teacher.build(shape, shape, VOCAB, FEATURE_DIM).to(device).train()
    baseline = BertForMaskedLM(bert_config(shape, VOCAB)).to(device).train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, VOCAB, (batch, seq), generator=generator)
    special = torch.zeros(batch, seq, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = losses.mask_tokens(input_ids, special, 103, VOCAB, 0.15, generator)
    attention = torch.ones(batch, seq, dtype=torch.long, device=device)
    input_ids, masked, labels = input_ids.to(device), masked.to(device), labels.to(device)
    features = torch.randn(batch, frames, FEATURE_DIM, device=device)
    frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    cast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )

    def teacher_step() -> None:
        with cast:
            out = teacher(input_ids, attention, masked_input_ids=masked, features=features, frame_mask=frame_mask)
            negatives = [losses.sample_negatives(batch, generator).to(device) for _ in range(2)]
            ct = losses.token_contrastive_loss(out["text_states"], attention.bool(), out["video_repr"], *negatives)
            loss = ct + losses.mlm_loss(out["mlm_logits"], labels)
        loss.backward()
        teacher.zero_grad(set_to_none=True)

    def baseline_step() -> None:
        with cast:
            loss = baseline(input_ids=masked, attention_mask=attention, labels=labels).loss
        loss.backward()
        baseline.zero_grad(set_to_none=True)

    seconds = {"teacher": timed(teacher_step, repeats, device), "mlm": timed(baseline_step, repeats, device)}
    tokens = batch * seq
    result = {f"{k}_step_s": v for k, v in seconds.items()}
    result.update({f"{k}_tokens_per_s": tokens / v for k, v in seconds.items()})
    result["overhead"] = seconds["teacher"] / seconds["mlm"]
    peak = peak_tflops()
    if peak:
        lm_params = sum(p.numel() for p in teacher.language_model.parameters())
        video_params = sum(p.numel() for p in teacher.video_encoder.parameters())
        flops = 6 * (2 * lm_params * tokens + video_params * batch * frames)
        result["teacher_mfu"] = flops / seconds["teacher"] / (peak * 1e12)
        result["mlm_mfu"] = 6 * sum(p.numel() for p in baseline.parameters()) * tokens / seconds["mlm"] / (peak * 1e12)
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
    header = f"{'preset':<15}{'teacher s':>11}{'mlm s':>9}{'teacher tok/s':>15}{'mlm tok/s':>11}{'overhead':>10}"
    print(header + (f"{'MFU teacher':>13}{'MFU mlm':>9}" if peak_tflops() else ""))
    for preset in args.presets:
        r = bench_preset(preset, batch, args.seq, args.frames, args.repeats, device)
        line = (
            f"{preset:<15}{r['teacher_step_s']:>11.3f}{r['mlm_step_s']:>9.3f}{r['teacher_tokens_per_s']:>15.0f}"
            f"{r['mlm_tokens_per_s']:>11.0f}{r['overhead']:>9.2f}x"
        )
        if "teacher_mfu" in r:
            line += f"{r['teacher_mfu']:>12.1%}{r['mlm_mfu']:>9.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
