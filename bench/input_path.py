"""The training input path alone (a worker's Ray Data share -> collate -> tensors on the device) against its step.

    python -m bench.input_path [--presets tiny bert-6l-512h bert-12l-768h] [--batch 32] [--seq 128] [--cpus 8]
        [--read-tasks 2 8]

For the teacher (caption + frame features of a `features` artifact) and the student (token sequences of a `corpus`
artifact): batches/s the training loop's own input path delivers (`vlkd.worker_batches.train_batches` over the stage's
Ray Data datasets, with its prefetching, pinned memory and non-blocking copies on a GPU), and batches/s of the
stage's step (forward, backward) on this machine's device, per preset. The input path does not depend on the
preset (only the step does), so it is measured once per stage. A GPU step of BERT-12L at batch 32 x 128 takes
tens of milliseconds: the input path must deliver at least 3x the step rate there, on the CPUs one GPU worker gets
(`--cpus`, a local Ray of that many logical CPUs), with each `--read-tasks` value of `resources.read_tasks`.

First, in one process without Ray, the teacher collate's padding of frame features (`vlkd.data.clips.clip_features`)
against the per-clip form it replaced (`per_clip_features`, below), on a batch of HowTo100M-shaped clips (1 to
2 x `--frames` frames each, a video's clips together), alternated `--rounds` times; and the whole collate in the
training process, with the captions tokenised there (the form before) and by the read tasks (`prepare_rows`, now).
The teacher's input path is measured both ways too, alternately, in the same Ray.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from bench.common import bert_tokenizer, machine, task_step_seconds
from bench.inputs import CLIPS_PER_VIDEO, DIMS, Inputs
from bench.kd_step import distill_task, frozen_teacher
from bench.train_step import a_batch, teacher_task
from vlkd.artifacts import ArtifactStore
from vlkd.data import features as fmt
from vlkd.data.clips import clip_datasets, clip_features
from vlkd.data.corpus import corpus_datasets
from vlkd.data.ingest import configure_ray_data
from vlkd.jobs.distill import DistillTask
from vlkd.jobs.teacher import TeacherTask
from vlkd.model_wrappers import autocast
from vlkd.specs import Resources, TeacherSpec, TrainSpec
from vlkd.worker_batches import train_batches


def per_clip_features(
    batch: pa.Table, max_frames: int, width: int, middle_frame: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: `clip_features` as it was before issue 34, a copy per clip into float32."""
    frames = batch.column("num_frames").to_numpy()
    values = fmt.flat_features(batch.column("features"))
    dim = len(values) // max(1, int(frames.sum()))
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]])
    kept = np.minimum(frames, max_frames)
    if middle_frame:
        starts, kept = starts + kept // 2, np.ones_like(kept)
    padded = np.zeros((len(frames), int(kept.max(initial=1)), width), np.float32)
    mask = np.zeros(padded.shape[:2], bool)
    for i, (start, count) in enumerate(zip(starts, kept, strict=True)):
        padded[i, :count] = values[start * dim : (start + count) * dim].reshape(count, dim)[:, :width]
        mask[i, :count] = True
    return padded, mask


def howto_batch(inputs: Inputs, clips: int, frames: int) -> pa.Table:
    """`clips` rows of `CLIP_COLUMNS`, `CLIPS_PER_VIDEO` a video, of 1 to 2 x `frames` frames each (mean `frames`):
    HowTo100M's clips vary in length, so a batch pads most of them."""
    rows = []
    for c in range(clips):
        features = inputs.rng.standard_normal((int(inputs.rng.integers(1, 2 * frames)), sum(DIMS)), np.float32)
        rows.append(fmt.Clip(f"video-{c // CLIPS_PER_VIDEO}", c, 8.0 * c, 8.0 * c + 8, inputs.sentence(), features))
    return fmt.clips_table(rows)


def padding_rates(batch: pa.Table, middle_frame: bool, rounds: int) -> dict[str, float]:
    """Clips/s of the per-clip and the current padding of one batch at the teacher's widths and `max_frames`,
    the two forms alternated `rounds` times so that a shared machine's load falls on both."""
    width = DIMS[0] if middle_frame else sum(DIMS)
    forms = {"per-clip": per_clip_features, "now": clip_features}
    seconds = dict.fromkeys(forms, 0.0)
    for _ in range(rounds):
        for name, pad in forms.items():
            start = time.perf_counter()
            pad(batch, TeacherSpec.model_fields["max_frames"].default, width, middle_frame)
            seconds[name] += time.perf_counter() - start
    return {name: rounds * len(batch) / spent for name, spent in seconds.items()}


def collate_rates(batch: pa.Table, tokenizer_dir: Path, rounds: int) -> dict[str, float]:
    """Clips/s of the teacher's collate on one batch, alternated `rounds` times: in the training process now
    (`collate`: prepared rows padded, frames padded, tensors made), there before (`in_process`: the captions
    tokenised first, as the collate did before `prepare_rows`), and the read task's share (`prepare_rows`)."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    task = TeacherTask(teacher_task("tiny", tokenizer, "unmasked").spec, tokenizer, sum(DIMS))
    prepared = task.prepare_rows(batch)
    forms = {
        "in_process": lambda: task.collate(task.prepare_rows(batch)),
        "collate": lambda: task.collate(prepared),
        "prepare_rows": lambda: task.prepare_rows(batch),
    }
    seconds = dict.fromkeys(forms, 0.0)
    for form in forms.values():
        form()
    for _ in range(rounds):
        for name, form in forms.items():
            start = time.perf_counter()
            form()
            seconds[name] += time.perf_counter() - start
    return {name: rounds * len(batch) / spent for name, spent in seconds.items()}


class TokenisedInTheCollate:
    """The teacher's task as it was before `prepare_rows`: the captions tokenised in the collate, in the training
    process (the baseline of the input path)."""

    def __init__(self, task: TeacherTask) -> None:
        self.task = task

    def collate(self, batch: pa.Table) -> dict:
        return self.task.collate(self.task.prepare_rows(batch))


def print_padding_rates(inputs: Inputs, tokenizer_dir: Path, clips: int, frames: int, rounds: int) -> None:
    batch = howto_batch(inputs, clips, frames)
    print(f"teacher collate, batch {clips}, {frames} frames a clip on average, {rounds} rounds:")
    for middle_frame in (False, True):
        rates = padding_rates(batch, middle_frame, rounds)
        print(
            f"  padding ({'middle_frame' if middle_frame else 'video'}): per-clip float32 {rates['per-clip']:,.0f} "
            f"clips/s, now float16 {rates['now']:,.0f} clips/s, {rates['now'] / rates['per-clip']:.1f}x",
            flush=True,
        )
    rates = collate_rates(batch, tokenizer_dir, rounds)
    print(
        f"  whole collate in the training process (video): captions tokenised there {rates['in_process']:,.0f} "
        f"clips/s, tokenised by the read tasks (now) {rates['collate']:,.0f} clips/s, "
        f"{rates['collate'] / rates['in_process']:.1f}x; the read task's tokenising {rates['prepare_rows']:,.0f} "
        "clips/s",
        flush=True,
    )


def batches_per_second(batches: Iterable[dict], count: int, device: torch.device) -> float:
    """Rate of the first `count` batches after the first (Ray Data's start-up is not the input path's rate)."""
    iterator = iter(batches)
    next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert all(t.device.type == device.type for t in batch.values() if isinstance(t, torch.Tensor))
    return count / (time.perf_counter() - start)


def input_rates(
    store: ArtifactStore, tokenizer_dir: Path, batch: int, count: int, device: torch.device, read_tasks: int
) -> dict:
    """Batches/s of the teacher's and the student's input paths, each over its stage's datasets, with
    `resources.read_tasks` Ray Data read tasks; the teacher's also with its captions tokenised in the training
    process (`teacher_in_process`, the form before `prepare_rows`), alternately."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    resources, prefetch = Resources(num_workers=0, read_tasks=read_tasks), TrainSpec().prefetch_batches
    configure_ray_data(resources)
    window = TrainSpec().shuffle_window
    features, _ = clip_datasets(store, "features/input", 64, 0, resources, batch, window)
    corpus, _ = corpus_datasets(store, "corpus/input", resources, batch, window, 0)
    teacher = TeacherTask(teacher_task("tiny", tokenizer, "unmasked").spec, tokenizer, 2560)
    student = DistillTask(distill_task("tiny", tokenizer, {}, None).spec, tokenizer, None, None, None, 1)
    paths = {
        "teacher_in_process": (features["train"], TokenisedInTheCollate(teacher), None),
        "teacher": (features["train"], teacher, teacher.prepare_rows),
        "student": (corpus["train"], student, None),
    }
    return {
        name: batches_per_second(
            train_batches(data.epoch(0, prepare=prepare), task, batch, device, prefetch, True), count, device
        )
        for name, (data, task, prepare) in paths.items()
    }


def step_rates(preset: str, batch: int, seq: int, frames: int, device: torch.device) -> dict[str, float]:
    """Steps per second of the teacher's step (two LM passes) and the student's KD step (MLM+NST+CRD)."""
    tokenizer = bert_tokenizer()
    cast, _ = autocast("auto", device)
    data = a_batch(tokenizer, batch, seq, frames, device)
    tasks = {
        "teacher": teacher_task(preset, tokenizer, "unmasked"),
        "student": distill_task(preset, tokenizer, {"nst": 1.0, "crd": 1.0}, frozen_teacher(preset, tokenizer, device)),
    }
    rates = {}
    for name, task in tasks.items():
        seconds, model = task_step_seconds(task, data, cast, 1, device)
        rates[name] = 1 / seconds
        del model
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "bert-6l-512h", "bert-12l-768h"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40, help="batches timed on the input path")
    parser.add_argument("--rounds", type=int, default=50, help="alternations of the two padding forms")
    parser.add_argument("--cpus", type=int, default=8, help="logical CPUs of the local Ray (one GPU worker's share)")
    parser.add_argument(
        "--read-tasks", type=int, nargs="+", default=[Resources().read_tasks], help="resources.read_tasks values"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="vlkd-input-path-") as tmp:
        store = ArtifactStore.open(Path(tmp, "store").as_uri())
        inputs = Inputs(store, Path(tmp))
        tokenizer_dir = inputs.tokenizer()
        print_padding_rates(inputs, tokenizer_dir, args.batch, args.frames, args.rounds)
        inputs.features("input", args.batch * (args.batches + 4) * 2, args.frames)
        inputs.corpus("input", args.batch * (args.batches + 4) * 2, tokenizer_dir, args.seq)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            for read_tasks in args.read_tasks:
                rates = input_rates(store, tokenizer_dir, args.batch, args.batches, device, read_tasks)
                print(
                    f"input path on {args.cpus} logical CPUs, batch {args.batch}, read_tasks {read_tasks}: "
                    f"teacher {rates['teacher']:.1f} batches/s (captions tokenised in the training process: "
                    f"{rates['teacher_in_process']:.1f}), student {rates['student']:.1f} batches/s",
                    flush=True,
                )
        finally:
            ray.shutdown()
    print(f"input/step with read_tasks {args.read_tasks[-1]}:")
    print(f"{'preset':<15}{'teacher step/s':>15}{'input/step':>12}{'KD step/s':>11}{'input/step':>12}")
    for preset in args.presets:
        steps = step_rates(preset, args.batch, args.seq, args.frames, device)
        print(
            f"{preset:<15}{steps['teacher']:>15.2f}{rates['teacher'] / steps['teacher']:>11.1f}x"
            f"{steps['student']:>11.2f}{rates['student'] / steps['student']:>11.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
