"""What a lost training worker and a too-short shard cost a real job, against the same job undisturbed.

    python -m bench.recovery [--steps 60] [--checkpoint-every 20] [--batch 8] [--preset tiny]

Stage jobs go through `vlkd submit --backend local` on a file store in a temporary folder, made from the synthetic
dataset (`vlkd data synth`, the tiny preprocess and text specs), one Ray Train worker each:
- **lost worker**: a teacher trains `--steps` steps straight, then again with its Ray Train worker process killed
  (SIGKILL, as a lost node takes it) once Ray Train has registered its first checkpoint. Ray Train starts a new
  worker, which resumes from that checkpoint (`train.max_failures`). Printed: each job's wall time (submit to
  SUCCEEDED) and their ratio, the last step it logged before it was killed and the step it resumed from (its manifest's
  `resumed_from`), so the steps trained twice, and how far the two runs' logged losses, learning rate and gradient
  norm differ at each step (a resumed run's weights, optimizer, data order and random state are restored).
- **short shard**: a distill job with two workers and a batch larger than each worker's share fails with the error
  that says so. Printed: seconds from submit to FAILED, against the same job with a batch that fits training one
  step (submit to SUCCEEDED), and the error line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.stage_jobs import job_metrics, spec_file, synthetic_inputs, vlkd

TIMED = {"step", "tokens_per_s", "samples_per_s", "tflops", "mfu", "mfu_achieved"}
"""logged values that depend on the machine's pace, not on what was trained"""

RAY_TRAIN_WORKER = b"RayTrainWorker"
"""in the process title Ray gives a Ray Train worker's actor process (`ray::RayTrainWorker...`)"""


def submit(folder: Path, stage: str, base: str, changes: dict[str, Any], env: dict[str, str]) -> tuple[str, float]:
    """A job submitted without waiting: its id and when it was submitted."""
    started = time.monotonic()
    job_id = vlkd("submit", stage, "-f", str(spec_file(folder, changes["name"], base, changes)), env=env).strip()
    return job_id, started


def ended(job_id: str, timeout: float = 1800) -> tuple[str, float, str]:
    """(state, when, error) once the job has ended."""
    from vlkd.backends.submission import job_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = job_status(job_id)
        if current.state.finished:
            return current.state.value, time.monotonic(), current.error
        time.sleep(0.5)
    sys.exit(f"job {job_id} did not end in {timeout:.0f} s")


def registered_checkpoint(store: str, job_id: str) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of the run (its snapshot names one): what a
    replaced worker resumes from."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.checkpoints import RunPlace

    storage = ArtifactStore.open(store).storage
    snapshot = f"{RunPlace(storage, job_id).prefix}/checkpoint_manager_snapshot.json"
    return storage.exists(snapshot) and bool(json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result"))


def train_workers(home: str) -> list[int]:
    """Ray Train worker processes of this benchmark's jobs (their environment names its VLKD_HOME)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if RAY_TRAIN_WORKER in (proc / "cmdline").read_bytes() and (
                f"VLKD_HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0")
            ):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def lose_worker(store: str, job_id: str, home: str, timeout: float = 600) -> None:
    """Kill the job's Ray Train worker once a checkpoint is registered."""
    from vlkd.backends.submission import job_status

    deadline = time.monotonic() + timeout
    while not registered_checkpoint(store, job_id):
        if time.monotonic() > deadline or job_status(job_id).state.finished:
            sys.exit(f"job {job_id} registered no checkpoint to resume from")
        time.sleep(0.1)
    workers = train_workers(home)
    if not workers:
        sys.exit(f"no Ray Train worker of job {job_id} found to kill")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


def reached_before_resuming(job_id: str) -> int:
    """The last step the job's log shows before its run resumed (the lost worker's last logged step)."""
    from vlkd.backends.submission import job_logs

    reached = 0
    for line in job_logs(job_id, False, None, None):
        if "resumed at step" in line:
            break
        if found := re.search(r"\bstep (\d+)/\d+ \(", line):
            reached = max(reached, int(found.group(1)))
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--videos", type=int, default=48)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-recovery-") as tmp:
        folder = Path(tmp)
        env = synthetic_inputs(folder, args.videos, {})
        store, home = env["VLKD_STORE"], env["VLKD_HOME"]
        os.environ.update(VLKD_STORE=store, VLKD_HOME=home)  # job_status, here
        train = {
            "batch_size": args.batch, "max_steps": args.steps, "log_every": 1, "eval_every": args.steps,
            "checkpoint_every": args.checkpoint_every, "patience": None, "val_size": 2 * args.batch,
        }  # fmt: skip
        teacher = {"model": args.preset, "train": train, "resources": {"num_workers": 1}}

        walls, logged = {}, {}
        for name in ("straight", "lost-worker"):
            job_id, started = submit(folder, "teacher", "teacher.yaml", {**teacher, "name": name}, env)
            if name == "lost-worker":
                lose_worker(store, job_id, home)
            state, finished, error = ended(job_id)
            if state != "SUCCEEDED":
                sys.exit(f"teacher {name} ended {state}: {error}")
            walls[name] = finished - started
            metrics = json.loads(vlkd("artifacts", "show", f"teacher/{name}", "--json", env=env))["metrics"]
            rows = job_metrics(store, f"teacher/{name}", folder / f"teacher-{name}", env)
            logged[name] = {row["step"]: {k: v for k, v in row.items() if k not in TIMED} for row in rows}
            resumed = metrics.get("resumed_from", [])
            shown = f"teacher {name:<12} {walls[name]:6.1f} s  steps {metrics['steps']}  resumed from {resumed}"
            if resumed:
                reached = reached_before_resuming(job_id)
                shown += f", killed after step {reached}: {reached - resumed[0]} steps trained twice"
            print(shown)
        straight, lost = logged["straight"], logged["lost-worker"]
        differences = [abs(lost[s][k] - v) / max(abs(v), 1e-12) for s in straight for k, v in straight[s].items()]
        print(
            f"lost worker: {walls['lost-worker'] / walls['straight']:.2f}x the straight job's wall time; its logged "
            f"losses, learning rate and gradient norm at each of {len(straight)} steps differ from the straight "
            f"run's by at most {max(differences):.1e} (relative)"
        )

        student = {"teacher": "teacher/straight", "model": args.preset, "resources": {"num_workers": 2}}
        corpus = json.loads(vlkd("artifacts", "show", "corpus/tiny", "--json", env=env))
        sequences = corpus["metrics"]["train_sequences"]
        runs = {
            "fits": {**train, "batch_size": args.batch, "max_steps": 1, "checkpoint_every": 1, "eval_every": 1},
            "short": {**train, "batch_size": sequences // 2 + 1, "max_failures": 0},  # fail once, not retried
        }
        seconds = {}
        for name, student_train in runs.items():
            job_id, started = submit(
                folder, "distill", "distill.yaml", {**student, "name": name, "train": student_train}, env
            )
            state, finished, error = ended(job_id)
            seconds[name] = finished - started
            print(
                f"distill {name:<6} (2 workers, batch {student_train['batch_size']}): {state} in {seconds[name]:.1f} s"
            )
            if name == "short":
                print(f"  error: {error}")
        print(f"short shard: the error came {seconds['short'] / seconds['fits']:.2f}x as late as one step's job ended")


if __name__ == "__main__":
    main()
