"""The one Ray Train loop the teacher and student stages share. A stage describes itself as a `TrainingTask`
(`vlkd.training_task`); `fit` runs it on Ray Train (`TorchTrainer`, DDP across workers), each worker's run being
a `vlkd.train_loop.Loop`, and returns the final checkpoint's payload. Checkpoints live in the artifact store under
`checkpoints/<job id>/` (`vlkd.checkpoints`): Ray Train persists them there (`RunConfig(storage_path=...)`,
`CheckpointConfig`) and restores them after a worker failure (`FailureConfig`) or when the same job id is submitted
again. Ray Train's in-process local mode (`num_workers: 0`) persists nothing itself, so there the loop writes and
finds them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlkd.checkpoints import Checkpoints, RunPlace, load_final
from vlkd.data.ingest import SplitReader
from vlkd.errors import DataError, VlkdError
from vlkd.joblog import WORKER_BANNER, say
from vlkd.specs import OptimSpec, Resources, TrainSpec
from vlkd.train_loop import Loop
from vlkd.training_task import TrainingTask


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    if not config["local_mode"]:  # ties this process's forwarded lines to its rank (`vlkd logs --worker N`)
        context = ray.train.get_context()
        say(WORKER_BANNER.format(rank=context.get_world_rank(), world=context.get_world_size()))
    # The worker's own files (its logs, the checkpoint it is saving) go when its run ends, however it ends: a node runs
    # job after job, and a Ray Train worker's process is not the job's (its scratch is on another node).
    with tempfile.TemporaryDirectory(prefix="vlkd-train-", ignore_cleanup_errors=True) as work:
        Loop(config, Path(work)).run()


def fit(
    task: TrainingTask,
    train: TrainSpec,
    optim: OptimSpec,
    resources: Resources,
    splits: dict[str, SplitReader],
    place: RunPlace,
    seed: int,
    identity: str,
    final: Path,
) -> dict[str, Any]:
    """Run `task` on Ray Train, put the final checkpoint in the local directory `final` (the job's scratch, so it
    goes with the job) and return its payload (`load_final`). `identity` names what is trained (e.g.
    `teacher/NAME`): a job id resumes from its checkpoints only for the same identity."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    problem = splits["train"].short_share(train.batch_size, max(1, resources.num_workers))
    if problem:  # before any worker starts: a worker would find it only after loading the model and its data
        raise DataError(problem)
    local_mode = resources.num_workers == 0
    storage_path, filesystem = place.storage.pyarrow_location("checkpoints")
    per_worker = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "task": task,
            "train": train,
            "optim": optim,
            "seed": seed,
            "place": place,
            "local_mode": local_mode,
            "identity": identity,
            "splits": splits,  # each worker reads its own share (`SplitReader.epoch`), not a split of one dataset
            "resources": resources,
        },
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={k: v for k, v in per_worker.items() if v} if not local_mode else None,
        ),
        run_config=RunConfig(
            name=place.job_id,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=train.max_failures),
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        user_error = _worker_user_error(exc)
        if user_error is None:
            raise
        raise user_error from None  # e.g. a shard too small for a batch: one line for the user, not Ray's report
    if local_mode:
        Checkpoints(place, train.keep_checkpoints, True).download_latest(final)
    else:
        with result.checkpoint.as_directory() as directory:
            shutil.copytree(directory, final, dirs_exist_ok=True)
    return load_final(final)


def _worker_user_error(failure: Exception) -> VlkdError | None:
    """The `VlkdError` a training worker raised (what the user must fix), if that is why training failed."""
    for error in getattr(failure, "worker_failures", {}).values():
        while error is not None and not isinstance(error, VlkdError):
            error = getattr(error, "cause", None) or error.__cause__
        if error is not None:
            return error
    return None
