"""The training input path alone (a worker's Ray Data share -> collate -> tensors on the device) against its step.

    python -m bench.input_path [--presets tiny bert-6l-512h bert-12l-768h] [--batch 32] [--seq 128] [--cpus 8]
        [--read-tasks 2 8]

For the teacher (caption + frame features of a `features` artifact) and the student (token sequences of a `corpus`
artifact): batches/s the training loop's own input path delivers (`vlkd.train.train_batches` over the stage's
Ray Data datasets, with its prefetching, pinned memory and non-blocking copies on a GPU), and batches/s of the
stage's step (forward, backward) on this machine's device, per preset. The input path does not depend on the
preset (only the step does), so it is measured once per stage. A GPU step of BERT-12L at batch 32 x 128 takes
tens of milliseconds: the input path must deliver at least 3x the step rate there, on the CPUs one GPU worker gets
(`--cpus`, a local Ray of that many logical CPUs), with each `--read-tasks` value of `resources.read_tasks`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import ray
import torch

from bench.common import bert_tokenizer, machine, task_step_seconds
from bench.inputs import Inputs
from bench.kd_step import distill_task, frozen_teacher
from bench.train_step import a_batch, teacher_task
from vlkd.artifacts import ArtifactStore
from vlkd.data.clips import clip_datasets
from vlkd.data.corpus import corpus_datasets
from vlkd.data.ingest import configure_ray_data
from vlkd.jobs.distill import DistillTask
from vlkd.jobs.teacher import TeacherTask
from vlkd.specs import Resources, TrainSpec
from vlkd.train import autocast, train_batches


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
    `resources.read_tasks` Ray Data read tasks."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    resources, prefetch = Resources(num_workers=0, read_tasks=read_tasks), TrainSpec().prefetch_batches
    configure_ray_data(resources)
    window = TrainSpec().shuffle_window
    features, _ = clip_datasets(store, "features/input", 64, 0, resources, batch, window)
    corpus, _ = corpus_datasets(store, "corpus/input", resources, batch, window, 0)
    teacher = TeacherTask(teacher_task("tiny", tokenizer, "unmasked").spec, tokenizer, 2560)
    student = DistillTask(distill_task("tiny", tokenizer, {}, None).spec, tokenizer, None, None, None, 1)
    paths = {"teacher": (features["train"], teacher), "student": (corpus["train"], student)}
    return {
        name: batches_per_second(train_batches(data.epoch(0), task, batch, device, prefetch, True), count, device)
        for name, (data, task) in paths.items()
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
        inputs.features("input", args.batch * (args.batches + 4) * 2, args.frames)
        inputs.corpus("input", args.batch * (args.batches + 4) * 2, tokenizer_dir, args.seq)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            for read_tasks in args.read_tasks:
                rates = input_rates(store, tokenizer_dir, args.batch, args.batches, device, read_tasks)
                print(
                    f"input path on {args.cpus} logical CPUs, batch {args.batch}, read_tasks {read_tasks}: "
                    f"teacher {rates['teacher']:.1f} batches/s, student {rates['student']:.1f} batches/s",
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
