"""The teacher's training step against a plain BERT MLM step of the same shape, same process.

    python -m bench.train_step [--presets tiny bert-6l-512h] [--batch 8] [--seq 128] [--frames 32]

The teacher step is the stage's own (`TeacherTask.loss`: L_CT + L_MLM, Sec. 3.2, with V^T over the frames), in both
of its forms: `contrastive_text: unmasked` (the paper's reading: LM^T reads the unmasked text for L_CT and the
masked text for MLM, as one [2B, L] pass) and `masked` (the authors' released code: one text serves both terms).
The paper's form runs twice: with the MLM head and its cross-entropy at the masked positions only (`sparse`, what
training runs) and at every position (`full`, the form before it, `TeacherTask(sparse_mlm=False)`); `gain` = full /
sparse. The baseline is transformers' BertForMaskedLM on the masked text only (its head at every position).
Overhead = teacher step / MLM step. A step's time is the fastest of `--repeats` calls, the forms and the baseline
taking turns, so a load on a shared machine falls on all alike. On a GPU the steps run in bf16 autocast (as
training does) and model FLOPs utilisation (MFU: 6 x parameters x tokens per step against the device's dense bf16
peak) is reported too.

Then the same step on what the teacher really reads: a batch of HowTo100M-shaped ASR captions (`synth_asr`, drawn
across videos as training draws them), collated by the stage (`TeacherTask.prepare_rows`, `collate`) with the
captions packed several to a row for LM^T (`packed`, what training runs) and padded (`padded`, the form before,
`TeacherTask(packed=False)`); real caption tokens per second of each, and `gain` = padded / packed.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import bert_tokenizer, fastest_in_turns, machine, peak_tflops, task_step, training_step
from vlkd.jobs.teacher import TeacherTask
from vlkd.model_wrappers import autocast
from vlkd.models.bert import bert_config
from vlkd.specs import parse_spec

FEATURE_DIM = 2560  # CLIP ViT-B/32 (512) + 3D-ResNeXt (2048)


def teacher_task(
    preset: str, tokenizer, contrastive_text: str, sparse_mlm: bool = True, packed: bool = True
) -> TeacherTask:
    spec = {"stage": "teacher", "name": "bench", "features": "features/f", "tokenizer": "tokenizer/t"}
    spec.update(model={"preset": preset}, contrastive_text=contrastive_text)
    return TeacherTask(parse_spec(spec), tokenizer, FEATURE_DIM, sparse_mlm, packed)


def caption_batch(task: TeacherTask, batch: int, frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch` HowTo100M-shaped ASR captions, drawn from across 8 videos of 111 clips, each with a clip of `frames`
    frames, as the teacher stage collates them (`prepare_rows`, `collate`), on `device`."""
    import numpy as np
    import pyarrow as pa

    from vlkd.data.synth_asr import howto_captions

    rng = np.random.default_rng(0)
    captions = howto_captions(seed=0, videos=8, clips_per_video=111)
    chosen = [captions[i] for i in rng.choice(len(captions), batch, replace=False)]
    rows = pa.table(
        {
            "video_id": [c.video_id for c in chosen],
            "text": [c.text for c in chosen],
            "num_frames": pa.array([frames] * batch, pa.int32()),
            "features": [rng.normal(size=frames * FEATURE_DIM).astype(np.float16) for _ in chosen],
        }
    )
    return {k: v.to(device) for k, v in task.collate(task.prepare_rows(rows)).items()}


def bench_packing(preset: str, batch: int, frames: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Real caption tokens/s of the teacher step on ASR captions, packed and padded, taking turns."""
    tokenizer = bert_tokenizer()
    cast, _ = autocast("auto", device)
    steps, tokens, shapes = {}, {}, {}
    for form, packed in (("padded", False), ("packed", True)):
        task = teacher_task(preset, tokenizer, "unmasked", packed=packed)
        data = caption_batch(task, batch, frames, device)
        steps[form] = task_step(task, data, cast, device)[0]
        tokens[form] = int(data["attention_mask"].sum())
        rows = data["packing_gather"].shape[0] if packed else batch
        shapes[form] = f"{rows}x{data['input_ids'].shape[1]}"
    seconds = fastest_in_turns(steps, repeats, device)
    result = {f"{k}_s": v for k, v in seconds.items()}
    result.update({f"{k}_tokens_per_s": tokens[k] / v for k, v in seconds.items()})
    result["gain"] = seconds["padded"] / seconds["packed"]
    result["shapes"] = f"{shapes['padded']} -> {shapes['packed']}"
    return result


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
        "video": torch.arange(batch, device=device),  # every clip from its own video
        "videos_per_batch": torch.tensor(float(batch), device=device),
    }


FORMS = {"full": ("unmasked", False), "sparse": ("unmasked", True), "masked": ("masked", True)}
"""each teacher form timed: its `contrastive_text` and `sparse_mlm`"""


def bench_preset(
    preset: str, batch: int, seq: int, frames: int, repeats: int, device: torch.device
) -> dict[str, float]:
    from transformers import BertForMaskedLM

    tokenizer = bert_tokenizer()
    data = a_batch(tokenizer, batch, seq, frames, device)
    cast, _ = autocast("auto", device)
    steps, flops = {}, {}
    for form, (contrastive_text, sparse_mlm) in FORMS.items():
        task = teacher_task(preset, tokenizer, contrastive_text, sparse_mlm)
        steps[form], model = task_step(task, data, cast, device)
        lm = sum(p.numel() for p in model.language_model.parameters())
        video = sum(p.numel() for p in model.video_encoder.parameters())
        passes = 2 if contrastive_text == "unmasked" else 1
        flops[form] = 6 * (passes * lm * batch * seq + video * batch * frames)
    baseline = BertForMaskedLM(bert_config(task.spec.model, len(tokenizer))).to(device).train()
    labels = torch.where(torch.rand(batch, seq, device=device) < 0.15, data["input_ids"], -100)
    inputs = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"], "labels": labels}
    steps["mlm"] = training_step(baseline, lambda: baseline(**inputs).loss, cast)
    flops["mlm"] = 6 * sum(p.numel() for p in baseline.parameters()) * batch * seq
    seconds = fastest_in_turns(steps, repeats, device)
    result = {f"{k}_s": v for k, v in seconds.items()}
    result.update({f"{k}_tokens_per_s": batch * seq / v for k, v in seconds.items()})
    result.update({f"{k}_overhead": seconds[k] / seconds["mlm"] for k in FORMS})
    result["sparse_gain"] = seconds["full"] / seconds["sparse"]
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
    print(f"each step the fastest of {args.repeats}, the forms taking turns")
    print("teacher, L_CT on the unmasked text (MLM head at every position: full; at the masked ones: sparse) and")
    print("on the masked text (sparse), against a BERT MLM step; gain = full / sparse, overhead = step / mlm step")
    header = (
        f"{'preset':<15}{'full s':>9}{'sparse s':>10}{'gain':>7}{'masked s':>10}{'mlm s':>8}"
        f"{'full':>7}{'sparse':>8}{'masked':>8}{'mlm tok/s':>11}"
    )
    print(header + (f"{'MFU full':>10}{'MFU sparse':>12}{'MFU masked':>12}{'MFU mlm':>9}" if peak_tflops() else ""))
    for preset in args.presets:
        r = bench_preset(preset, batch, args.seq, args.frames, args.repeats, device)
        line = (
            f"{preset:<15}{r['full_s']:>9.3f}{r['sparse_s']:>10.3f}{r['sparse_gain']:>6.2f}x{r['masked_s']:>10.3f}"
            f"{r['mlm_s']:>8.3f}{r['full_overhead']:>6.2f}x{r['sparse_overhead']:>7.2f}x{r['masked_overhead']:>7.2f}x"
            f"{r['mlm_tokens_per_s']:>11.0f}"
        )
        if "mlm_mfu" in r:
            line += f"{r['full_mfu']:>10.1%}{r['sparse_mfu']:>12.1%}{r['masked_mfu']:>12.1%}{r['mlm_mfu']:>9.1%}"
        print(line, flush=True)
    print(f"teacher on {batch} HowTo100M-shaped ASR captions, {args.frames} frames a clip: LM^T rows padded -> packed")
    print(f"{'preset':<15}{'padded s':>10}{'packed s':>10}{'gain':>7}{'padded tok/s':>14}{'packed tok/s':>14}  rows")
    for preset in args.presets:
        r = bench_packing(preset, batch, args.frames, args.repeats, device)
        print(
            f"{preset:<15}{r['padded_s']:>10.3f}{r['packed_s']:>10.3f}{r['gain']:>6.2f}x"
            f"{r['padded_tokens_per_s']:>14,.0f}{r['packed_tokens_per_s']:>14,.0f}  {r['shapes']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
