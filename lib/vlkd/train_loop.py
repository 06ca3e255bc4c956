"""One worker's training run, everything inside Ray Train's `train_loop_per_worker` (`vlkd.train`): AdamW with
warm-up and linear decay (`vlkd.optim`), mixed precision on GPU, gradient accumulation and clipping, periodic
validation with early stopping, checkpoints that carry everything needed to resume (model, optimizer, scheduler,
step, RNG, best weights, logs), metrics to the console, a JSON Lines file and TensorBoard (`vlkd.curves`), and the
run's progress and device use as structured events (`vlkd.joblog`). Each worker steps on its own share of the data
(`vlkd.worker_batches`)."""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlkd.checkpoints import STATE_FILE, Checkpoints, load_payload, rng_state, set_rng_state
from vlkd.curves import LOGS, MetricsLog
from vlkd.data.ingest import SplitReader, configure_ray_data, short_share
from vlkd.durations import clock
from vlkd.errors import DataError, VlkdError
from vlkd.flops import counted_flops, device_peak_tflops, trainable_parameters
from vlkd.joblog import describe_utilisation, report_progress
from vlkd.model_wrappers import autocast, compile_model, eager, unwrap
from vlkd.optim import build_optimizer, build_scheduler
from vlkd.specs import OptimSpec, TrainSpec
from vlkd.training_task import TrainingTask
from vlkd.worker_batches import examples_in, host_group, train_batches, while_every_rank_has_one

log = logging.getLogger("vlkd.train")


@dataclass
class TrainState:
    """The run's progress that a checkpoint saves beside the weights, optimizer and RNG: a resumed run goes on from
    it as the uninterrupted one would have."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    evals_without_improvement: int = 0
    stopped_early: bool = False
    last_metrics: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    """validation metrics at `best_step`: those of the weights that get published"""
    peak: dict[str, float] = field(default_factory=dict)
    resumed_from: list[int] = field(default_factory=list)
    """the steps this run was resumed at (after a lost worker or a resubmission)"""
    epoch: int = 0
    """passes over the training dataset done (a small split's pass holds several epochs: `passes_for`)"""
    epoch_batches: int = 0
    """batches of `epoch` already trained on: a resumed run skips them, so it sees the batches it would have"""
    window_micro: int = 0
    window_terms: dict[str, float] = field(default_factory=dict)
    """micro-steps and summed loss terms since the last logged step (what the next log line averages)"""
    first_logged: dict[str, float] = field(default_factory=dict)
    last_logged: dict[str, float] = field(default_factory=dict)
    """the terms and probes of the first and the latest logged step, for the run's summary"""


class Loop:
    """One worker's training run (everything that happens inside `train_loop_per_worker`)."""

    def __init__(self, config: dict[str, Any], work: Path) -> None:
        import ray.train
        import ray.train.torch

        self.task: TrainingTask = config["task"]
        self.train: TrainSpec = config["train"]
        self.optim: OptimSpec = config["optim"]
        self.seed: int = config["seed"]
        self.identity: str = config["identity"]
        self.checkpoints = Checkpoints(config["place"], self.train.keep_checkpoints, config["local_mode"])
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.manual_seed(self.seed + self.rank)
        model = self.task.build_model()
        self.flags = None
        """the host-side group `_in_step` reduces its flag in (`host_group`)"""
        if self.world > 1:
            ddp = {"find_unused_parameters": getattr(self.task, "ddp_find_unused", False)}
            self.model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp)
            self.flags = host_group()
        else:
            self.model = model.to(self.device)
        if self.train.compile_mode:
            self.model = compile_model(self.model, self.train.compile_mode)
        self.trained_parameters = trainable_parameters(model)
        self.peak_tflops = device_peak_tflops(self.device, self.train.peak_tflops)
        self.optimizer = build_optimizer(self.optim, self.model)
        self.scheduler = build_scheduler(self.optim, self.optimizer, self.train.max_steps)
        self.cast, needs_scaler = autocast(self.train.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.work = work
        self.usage: dict[str, float] | None = None
        """the device's use over the last logged window (`_utilisation`), which the run's last report keeps"""
        self.pending_terms: dict[str, torch.Tensor] = {}
        """summed terms of the window's micro-steps not yet read from the device (`_read_terms`)"""
        self.generator = torch.Generator().manual_seed(self.seed * 1000 + self.rank)  # masks and negatives
        self._resume()
        self.metrics = MetricsLog(self.work / LOGS, enabled=self.rank == 0)
        configure_ray_data(config["resources"])  # this process runs its own share's Ray Data pipelines
        self.splits: dict[str, SplitReader] = config["splits"]
        self.prepare_rows = getattr(self.task, "prepare_rows", None)
        validation = self.splits.get("validation")
        self.validation = (
            None if validation is None or validation.empty else validation.epoch(0, prepare=self.prepare_rows)
        )

    def _resume(self) -> None:
        restored = self.work / "restored"
        if not self.checkpoints.restore(restored):
            return
        saved = load_payload(restored / STATE_FILE, f"the latest checkpoint of job {self.checkpoints.place.job_id}")
        if saved.get("identity") != self.identity:
            raise VlkdError(
                f"the checkpoints of job {self.checkpoints.place.job_id} belong to {saved.get('identity')}, not "
                f"{self.identity}: a job id resumes only its own run; submit with a new job id"
            )
        unwrap(self.model).load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(**saved["state"])
        self.state.resumed_from.append(self.state.step)
        self.best_weights = saved["best_weights"]
        rng = saved["rng"][min(self.rank, len(saved["rng"]) - 1)]  # each rank its own; a larger group reuses the last
        set_rng_state(rng)
        self.generator.set_state(rng["generator"])
        if (restored / LOGS).is_dir():
            shutil.copytree(restored / LOGS, self.work / LOGS, dirs_exist_ok=True)
        shutil.rmtree(restored)  # loaded: the node's disk holds no checkpoint while the run trains
        log.info("resumed at step %d from the latest checkpoint", self.state.step)

    def run(self) -> None:
        started, window = time.monotonic(), {"time": time.monotonic(), "tokens": 0, "samples": 0, "flops": 0.0}
        state, train = self.state, self.train
        first_step = state.step
        self._report_progress(rate=None)
        while not self._finished():
            batches = 0
            share = self.splits["train"].epoch(state.epoch, self.rank, self.world, self.prepare_rows)  # same on rerun
            for batch in self._in_step(
                train_batches(share, self.task, train.batch_size, self.device, train.prefetch_batches, True)
            ):
                batches += 1
                if batches <= state.epoch_batches:
                    continue  # trained on before the checkpoint this run resumed from
                state.epoch_batches = batches
                self._micro_step(batch, window)
                if self._finished():
                    break
            if batches == 0:  # every epoch would be empty: without this the loop spins for ever
                raise DataError(self._short_share(share))
            if not self._finished():
                state.epoch, state.epoch_batches = state.epoch + 1, 0
        self._checkpoint(final=True)
        self.metrics.close()
        seconds = time.monotonic() - started
        self._report_progress((state.step - first_step) / seconds, self.usage)
        if self.rank == 0:
            log.info("finished at step %d in %.0f s", state.step, seconds)

    def _report_progress(self, rate: float | None, usage: dict[str, float] | None = None) -> None:
        """Rank 0 says how many of `max_steps` are done (`rate` in steps per second), for progress bars and
        `vlkd status`, with the device's use (`_utilisation`)."""
        if self.rank == 0:
            report_progress(self.state.step, self.train.max_steps, "step", rate, usage)

    def _in_step(self, batches: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """Batches while every worker has one (`while_every_rank_has_one`)."""
        return batches if self.world == 1 else while_every_rank_has_one(batches, self.flags)

    def _short_share(self, share: Any) -> str:
        rows = share.count()
        fewest, rank = rows, self.rank
        if self.world > 1:  # every rank stops when one has no batch: name that one
            import torch.distributed as dist

            every: list[int] = [0] * self.world
            dist.all_gather_object(every, rows)
            fewest, rank = min((r, i) for i, r in enumerate(every))
        return short_share(fewest, rank, self.world, self.train.batch_size)

    def _finished(self) -> bool:
        return self.state.step >= self.train.max_steps or self.state.stopped_early

    def _micro_step(self, batch: dict[str, Any], window: dict[str, float]) -> None:
        self.state.window_micro += 1
        if self.train.cuda_graphs:  # the previous step's outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        sync = self.state.window_micro % self.train.grad_accum_steps == 0
        no_sync = self.model.no_sync if (self.world > 1 and not sync) else nullcontext
        self.model.train()
        logged = sync and (self.state.step + 1) % self.train.log_every == 0
        probed = getattr(self.task, "loss_and_probes", None) if logged else None
        probes: dict[str, float] = {}
        with no_sync(), self.cast:
            if probed is None:
                loss, terms = self.task.loss(self.model, batch, self.generator)
            else:
                loss, terms, probes = probed(eager(self.model), batch, self.generator)
        self.scaler.scale(loss / self.train.grad_accum_steps).backward()
        window["tokens"] += self.task.tokens(batch)
        window["samples"] += examples_in(batch)
        window["flops"] += self.task.flops(batch)
        pending = self.pending_terms
        # A term kept as it came would, under CUDA graphs, be overwritten by the next step before it is read.
        first = (lambda v: v.clone()) if self.train.cuda_graphs else (lambda v: v)
        self.pending_terms = {k: pending[k] + v if k in pending else first(v) for k, v in terms.items()}
        if not sync:
            return
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        if logged:
            self._log(window, float(grad_norm), probes)
        if self.state.step % self.train.eval_every == 0:
            self._validate()
        if self.state.step % self.train.checkpoint_every == 0 and not self._finished():
            self._checkpoint(final=False)

    def _read_terms(self) -> None:
        """Add the window's pending terms, read from the device (one wait for the GPU), to the saved state."""
        summed = self.state.window_terms
        self.state.window_terms = {k: summed.get(k, 0.0) + float(v) for k, v in self.pending_terms.items()}
        self.pending_terms = {}

    def _utilisation(self, tokens: float, flops: float, seconds: float) -> dict[str, float]:
        """This worker's TFLOP/s (achieved: `vlkd.flops`) and, where the device's peak is known, `mfu` (counted:
        6 x parameters x tokens) and `mfu_achieved`."""
        usage = {"tflops": flops / seconds / 1e12}
        if self.peak_tflops:
            usage["mfu"] = counted_flops(self.trained_parameters, tokens) / seconds / (self.peak_tflops * 1e12)
            usage["mfu_achieved"] = usage["tflops"] / self.peak_tflops
        return usage

    def _log(self, window: dict[str, Any], grad_norm: float, probes: dict[str, float]) -> None:
        seconds = max(time.monotonic() - window["time"], 1e-9)
        count = self.state.window_micro
        self._read_terms()
        terms = {k: v / count for k, v in self.state.window_terms.items()}
        tokens = float(window["tokens"])
        throughput = {
            "tokens_per_s": tokens * self.world / seconds,
            "samples_per_s": window["samples"] * self.world / seconds,
        }
        usage = self.usage = self._utilisation(tokens, window["flops"], seconds)
        self.state.last_logged = {**terms, **probes}
        self.state.first_logged = self.state.first_logged or self.state.last_logged
        metrics = {
            **terms, **probes, "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm, **throughput, **usage
        }  # fmt: skip
        for key, value in throughput.items():
            self.state.peak[key] = max(self.state.peak.get(key, 0.0), value)
        self.metrics.write(self.state.step, metrics)
        rate = self.train.log_every / seconds
        self._report_progress(rate, usage)
        if self.rank == 0:
            remaining = (self.train.max_steps - self.state.step) / rate
            shown = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
            log.info(
                "step %d/%d (%.0f%%) %s | lr %.2e | %.0f tok/s | %s | eta %s",
                self.state.step,
                self.train.max_steps,
                100 * self.state.step / self.train.max_steps,
                shown,
                metrics["lr"],
                throughput["tokens_per_s"],
                describe_utilisation(usage),
                clock(remaining),
            )
        window.update(time=time.monotonic(), tokens=0, samples=0, flops=0.0)
        self.state.window_terms, self.state.window_micro = {}, 0

    def _validate(self) -> None:
        """Every rank evaluates the whole validation split, so all take the same early-stopping decision."""
        self.model.eval()
        with torch.no_grad(), self.cast:
            batches = train_batches(self.validation, self.task, self.train.batch_size, self.device, 1, False)
            metrics = self.task.evaluate(unwrap(self.model), batches)
        self.state.last_metrics = metrics
        if metrics["val_loss"] < self.state.best_val:
            self.state.best_val, self.state.best_step = metrics["val_loss"], self.state.step
            self.state.best_metrics = metrics
            self.state.evals_without_improvement = 0
            self.best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()})
        else:
            self.state.evals_without_improvement += 1
            if self.train.patience is not None and self.state.evals_without_improvement >= self.train.patience:
                self.state.stopped_early = True
        self.metrics.write(self.state.step, {**metrics, "best_val_loss": self.state.best_val})
        if self.rank == 0:
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            log.info(
                "step %d validation: %s%s", self.state.step, shown, " (early stop)" if self.state.stopped_early else ""
            )

    def _every_ranks_rng(self) -> list[dict[str, Any]]:
        """Each rank's random state (Python, NumPy, torch, CUDA, and the generator of masks and negatives), for rank 0
        to save: every rank restores its own, so a resumed run draws what the uninterrupted one would have."""
        mine = {**rng_state(), "generator": self.generator.get_state()}
        if self.world == 1:
            return [mine]
        import torch.distributed as dist

        every: list[dict[str, Any]] = [{}] * self.world
        dist.all_gather_object(every, mine)
        return every

    def _checkpoint(self, final: bool) -> None:
        self._read_terms()  # the window's terms so far, saved with the state
        if final and self.state.best_step < 0 and self.validation is not None:
            self._validate()  # a run shorter than eval_every still picks its weights on validation data
        directory = self.work / f"checkpoint-{self.state.step}"
        directory.mkdir(parents=True, exist_ok=True)
        rng = self._every_ranks_rng()
        if self.rank == 0:
            payload = {
                "identity": self.identity,
                "model": unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": asdict(self.state),
                "best_weights": self.best_weights,
                "rng": rng,
            }
            torch.save(payload, directory / STATE_FILE)
            if (self.work / LOGS).is_dir():
                shutil.copytree(self.work / LOGS, directory / LOGS, dirs_exist_ok=True)
        report = {"step": self.state.step, "best_val_loss": self.state.best_val, **self.state.last_metrics}
        self.checkpoints.save(directory, self.state.step, report, is_writer=self.rank == 0)
        # Saved to the run's storage by now (Ray Train's report uploads before it returns): a copy per checkpoint on
        # this disk would grow with the run.
        shutil.rmtree(directory)
