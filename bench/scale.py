"""Peak memory of every stage's job on N and 10N of data with the same steps or rows, and its throughput.

    python -m bench.scale [--factor 10] [--stages preprocess text teacher distill eval] [--size 1.0]

Each stage runs as a job process (`python -m vlkd.jobs.<stage> --spec ... --store ...`), exactly as a backend
starts it, on a local Ray it starts itself. Memory is the PSS of the job's whole process tree, sampled every 0.2 s:
the driver, Ray's GCS, raylet, dashboard agents, workers, and the object store's shared pages, each page counted
once. Inputs are written straight in the artifacts' formats (nothing is decoded to make them): `features` shards of
random 2560-d frame features, a token corpus, a text corpus, an SST-2 task file, a teacher and a student of random
weights, and one short and one `factor` times longer video for preprocess. Training stages run the same number of
steps at both sizes, so their work is the same and only the data behind it grows. `--size` scales N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import machine
from bench.inputs import TOKENIZER, Inputs
from vlkd.artifacts import ArtifactStore
from vlkd.curves import METRICS_PATH
from vlkd.evaluation.results import RESULTS_FILE as RESULTS
from vlkd.inputs import open_input

STAGES = ("preprocess", "text", "teacher", "distill", "eval")
OUTPUT = {"preprocess": "features", "text": "corpus", "teacher": "teacher", "distill": "student", "eval": "eval"}
FRAMES_PER_CLIP = 8
TRAINING = {"batch_size": 16, "max_steps": 200, "log_every": 50, "eval_every": 200, "checkpoint_every": 200}
FINETUNE = {"epochs": 1, "max_steps": 40, "batch_size": 16, "max_len": 64}


def process_tree_pss_mb(root: int) -> tuple[float, float]:
    """PSS of `root` and all its descendants, and the part of it in shared memory (Ray's object store), in MB;
    pages shared between them count once in total."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    total_kb = shared_kb = 0
    for pid in tree:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        except (OSError, ValueError):
            continue
        total_kb += int(fields.get("Pss", "0 kB").split()[0])
        shared_kb += int(fields.get("Pss_Shmem", "0 kB").split()[0])
    return total_kb / 1024, shared_kb / 1024


@dataclass
class Run:
    peak_mb: float
    peak_shared_mb: float
    """the most of it ever in shared memory: Ray's object store"""
    seconds: float
    manifest: dict
    logs: dict[str, list[float]]
    """a training run's logged metrics by name (`logs/metrics.jsonl` of its artifact)"""
    report: dict
    """an eval run's `results.json`"""


def run_job(stage: str, spec: dict, store: ArtifactStore, work: Path) -> Run:
    """Run a stage's job in its own process and follow its process tree's memory until it ends."""
    import yaml

    from vlkd.runtime import job_module

    spec_file = work / f"{stage}-{spec['name']}.yaml"
    spec_file.write_text(yaml.safe_dump({"stage": stage, **spec}))
    command = [sys.executable, "-m", job_module(stage), "--spec", str(spec_file), "--store", store.uri]
    command += ["--job-id", f"scale-{stage}-{spec['name']}"]
    log = work / f"{stage}-{spec['name']}.log"
    started = time.monotonic()
    with open(log, "w") as out:
        job = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
        peak = peak_shared = 0.0
        while job.poll() is None:
            total, shared = process_tree_pss_mb(job.pid)
            peak, peak_shared = max(peak, total), max(peak_shared, shared)
            time.sleep(0.2)
    seconds = time.monotonic() - started
    if job.returncode != 0:
        raise SystemExit(f"{stage} job failed (exit {job.returncode}); its log: {log}\n{log.read_text()[-3000:]}")
    ref = f"{OUTPUT[stage]}/{spec['name']}"
    manifest = store.manifest(ref)
    logs: dict[str, list[float]] = {}
    report: dict = {}
    files = {f.path for f in manifest.files}
    if METRICS_PATH in files:
        for line in open_input(ref, store).read_bytes(METRICS_PATH).decode().splitlines():
            for key, value in json.loads(line).items():
                logs.setdefault(key, []).append(value)
    if RESULTS in files:
        report = json.loads(open_input(ref, store).read_bytes(RESULTS))
    return Run(peak, peak_shared, seconds, manifest.model_dump(mode="json"), logs, report)


@dataclass(frozen=True)
class Stage:
    """How one stage is measured: its inputs at a size, its spec on them, and what its throughput counts."""

    unit: str
    prepare: Callable[[Inputs, str, int], None]
    spec: Callable[[str], dict]
    rate: Callable[[Run, int], float]
    """rows per second"""
    base: int
    """rows of data at size N (scaled by --size)"""


def _teacher_spec(name: str) -> dict:
    return {
        "name": name,
        "features": f"features/{name}",
        "tokenizer": TOKENIZER,
        "model": "tiny",
        "max_text_len": 32,
        "max_frames": FRAMES_PER_CLIP,
        "train": {**TRAINING, "val_size": 64, "patience": None},
        "resources": {"num_workers": 0},
    }


def _distill_spec(name: str) -> dict:
    return {
        "name": name,
        "teacher": "teacher/scale",
        "corpus": f"corpus/{name}",
        "model": "tiny",
        "kd": {"nst": 1.0, "voken": 1.0},
        "kd_options": {"voken": {"features": f"features/{name}", "bank_size": 64}},
        "max_len": 64,
        "train": {**TRAINING, "val_size": 64},
        "resources": {"num_workers": 0},
    }


def _training_rate(run: Run, rows: int) -> float:
    """Rows per second of a training stage's steps: the mean of its logged windows after the first (which holds
    the start: compiling kernels, filling the read-ahead), so the rate is the steady one, not the set-up's."""
    logged = run.logs.get("samples_per_s", [])[1:]
    return sum(logged) / max(1, len(logged))


def _finetuning_rate(run: Run, rows: int) -> float:
    """Examples per second of the finetuning run's training (its `seconds` in the report's results.json)."""
    (finetuned,) = run.report["runs"]
    return FINETUNE["max_steps"] * FINETUNE["batch_size"] / finetuned["seconds"]


def _prepare_distill(inputs: Inputs, name: str, rows: int) -> None:
    inputs.corpus(name, rows, inputs.work / "tokenizer")
    inputs.features(name, rows // 4, FRAMES_PER_CLIP)


STAGE_RUNS: dict[str, Stage] = {
    "preprocess": Stage(
        "features/s",
        lambda inputs, name, rows: inputs.video(name, rows),
        lambda name: {
            "name": name,
            "videos": f"dataset/{name}",
            "encoder_2d": {"name": "pixels", "image_size": 224},  # the paper's frame sizes: rows as large as theirs
            "encoder_3d": {"name": "pixel-motion", "image_size": 112},
            "max_frames": 100_000,
            "resources": {"num_workers": 1},
        },
        lambda run, rows: run.manifest["metrics"]["frames"] / run.seconds,
        60,
    ),
    "text": Stage(
        "tokens/s",
        lambda inputs, name, rows: inputs.text(name, rows),
        lambda name: {
            "name": name,
            "corpus": f"dataset/{name}",
            "tokenizer": {"vocab_size": 400, "min_frequency": 1},
            "max_len": 128,
            "val_size": 64,
        },
        lambda run, rows: run.manifest["metrics"]["tokens"] / run.seconds,
        4000,
    ),
    "teacher": Stage(
        "clips/s",
        lambda inputs, name, rows: inputs.features(name, rows, FRAMES_PER_CLIP),
        _teacher_spec,
        _training_rate,
        2000,
    ),
    "distill": Stage("sequences/s", _prepare_distill, _distill_spec, _training_rate, 4000),
    "eval": Stage(
        "examples/s",
        lambda inputs, name, rows: inputs.task(name, rows),
        lambda name: {
            "name": name,
            "models": ["student/scale"],
            "tasks": [{"name": "sst2", "data": f"dataset/{name}"}],
            "finetune": FINETUNE,
            "seeds": [0],
            "resources": {"num_workers": 0},
        },
        _finetuning_rate,
        2000,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--factor", type=int, default=10, help="the larger size is this many times the smaller")
    parser.add_argument("--size", type=float, default=1.0, help="scales N (rows at the smaller size)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, deleted after")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vlkd-scale-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = ArtifactStore.open((work / "store").as_uri())
        inputs = Inputs(store, work)
        tokenizer = inputs.tokenizer()
        os.replace(tokenizer, work / "tokenizer")
        inputs.models(work / "tokenizer", FRAMES_PER_CLIP)
        header = f"{'stage':<11}{'rows N':>8}{'rows xF':>9}{'peak MB N':>11}{'peak MB xF':>12}{'ratio':>7}"
        header += f"{'store MB N':>12}{'store MB xF':>13}"
        print(header + f"{'rate N':>10}{'rate xF':>10}{'wall s N':>10}{'wall s xF':>11}  unit", flush=True)
        for name in args.stages:
            stage = STAGE_RUNS[name]
            results = []
            for factor in (1, args.factor):
                rows = max(1, round(stage.base * args.size * factor))
                label = f"{name}-{factor}x"
                stage.prepare(inputs, label, rows)
                run = run_job(name, stage.spec(label), store, work)
                results.append((rows, run, stage.rate(run, rows)))
            (n, small, rate_n), (m, large, rate_m) = results
            ratio = large.peak_mb / small.peak_mb
            memory = f"{small.peak_mb:>11.0f}{large.peak_mb:>12.0f}{ratio:>6.2f}x"
            memory += f"{small.peak_shared_mb:>12.0f}{large.peak_shared_mb:>13.0f}"
            speed = f"{rate_n:>10.1f}{rate_m:>10.1f}{small.seconds:>10.1f}{large.seconds:>11.1f}"
            print(f"{name:<11}{n:>8}{m:>9}{memory}{speed}  {stage.unit}", flush=True)


if __name__ == "__main__":
    main()
