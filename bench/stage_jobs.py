"""Real stage jobs on this machine's device: a teacher and a distill job through `vlkd submit --backend local`, their
throughput and MFU read from the jobs' own metrics (what a user sees in metrics.jsonl, TensorBoard and `vlkd status`).

    python -m bench.stage_jobs [--preset bert-12l-768h] [--steps 150] [--batch 128] [--compile [MODE]]

A file store in a temporary folder gets the synthetic dataset (`vlkd data synth`), its features (the tiny
preprocess spec) and a corpus packed to `--seq` tokens; then the teacher and a student distilled from it with
MLM + NST + CRD train `--steps` steps each at `--preset`, one training worker (with the GPU, if there is one), bf16
on a GPU. Printed per job: wall time, and over its logged steps after the first (the first holds start-up and any
compile) the median tokens/s, TFLOP/s and, where the device's peak is known, MFU counted and achieved
(`vlkd.flops`). On a CPU, `--preset tiny --steps 20 --batch 8` checks the script in a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.common import machine

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
READ = ("tokens_per_s", "tflops", "mfu", "mfu_achieved")


def vlkd(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vlkd.cli.main", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"vlkd {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def spec_file(folder: Path, name: str, base: str, changes: dict[str, Any]) -> Path:
    spec = yaml.safe_load((EXAMPLES / base).read_text()) | changes
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def synthetic_inputs(folder: Path, videos: int, text: dict[str, Any]) -> dict[str, str]:
    """A file store in `folder` with the synthetic dataset of `videos` videos, its features (the tiny preprocess
    spec) and a tokenizer and corpus (the tiny text spec with `text`'s changes); the environment that runs vlkd on
    it, with a home of its own in `folder`."""
    env = {**os.environ, "VLKD_STORE": (folder / "store").as_uri(), "VLKD_HOME": str(folder / "home")}
    vlkd("data", "synth", "--videos", str(videos), "--out", str(folder / "synth"), env=env)
    specs = {"preprocess": EXAMPLES / "preprocess.yaml", "text": spec_file(folder, "text", "text.yaml", text)}
    for stage, spec in specs.items():
        vlkd("submit", stage, "-f", str(spec), "--wait", env=env)
    return env


def job_metrics(store: str, ref: str, folder: Path, env: dict[str, str]) -> list[dict[str, float]]:
    """The training steps the job logged (its artifact's logs/metrics.jsonl), validation lines left out."""
    vlkd("artifacts", "get", ref, "-o", str(folder), "--store", store, env=env)
    lines = (folder / "logs" / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "tokens_per_s" in row]


def summary(name: str, seconds: float, rows: list[dict[str, float]]) -> str:
    steady = rows[1:] or rows
    medians = {k: statistics.median(r[k] for r in steady) for k in READ if all(k in r for r in steady)}
    shown = f"{name:<9}{seconds:>8.0f} s  {medians.get('tokens_per_s', 0):>10,.0f} tok/s  "
    shown += f"{medians.get('tflops', 0):>8.3g} TFLOP/s"
    if "mfu" in medians:
        shown += f"  MFU {100 * medians['mfu']:.1f}% counted, {100 * medians['mfu_achieved']:.1f}% achieved"
    return shown + f"  ({len(steady)} logged steps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="bert-12l-768h")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        choices=[True, "reduce-overhead", "max-autotune"],
        help="train.compile for both jobs: true without a value, or a mode",
    )
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    print(f"machine: {machine()}")
    resources = {"num_workers": 1, "gpus_per_worker": 1, "cpus_per_worker": 4} if gpu else {"num_workers": 0}
    train = {
        "batch_size": args.batch,
        "max_steps": args.steps,
        "log_every": max(1, args.steps // 10),
        "eval_every": args.steps,
        "checkpoint_every": args.steps,
        "patience": None,
        "val_size": 2 * args.batch,
        "compile": args.compile,
    }
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-jobs-") as tmp:
        folder = Path(tmp)
        env = synthetic_inputs(folder, args.videos, {"name": "bench", "max_len": args.seq, "val_size": 256})
        store = env["VLKD_STORE"]
        teacher = {
            "name": "bench", "tokenizer": "tokenizer/bench", "model": args.preset, "max_text_len": 32,
            "loss_weights": {"ct": 1.0, "mlm": 1.0}, "train": train, "resources": resources,
        }  # fmt: skip
        student = {
            "name": "bench-nst-crd", "teacher": "teacher/bench", "corpus": "corpus/bench", "model": args.preset,
            "max_len": args.seq, "kd_options": {"crd": {"buffer_size": 16384, "num_negatives": 4096}},
            "train": train, "resources": resources,
        }  # fmt: skip
        print(f"jobs: {args.preset}, batch {args.batch}, {args.steps} steps, compile {args.compile}")
        for stage, base, changes, ref in (
            ("teacher", "teacher.yaml", teacher, "teacher/bench"),
            ("distill", "distill.yaml", student, "student/bench-nst-crd"),
        ):
            started = time.monotonic()
            vlkd("submit", stage, "-f", str(spec_file(folder, stage, base, changes)), "--wait", env=env)
            seconds = time.monotonic() - started
            print(summary(stage, seconds, job_metrics(store, ref, folder / ref.replace("/", "-"), env)), flush=True)


if __name__ == "__main__":
    main()
