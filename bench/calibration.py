"""How often a difference's 95% interval excludes 0 when the two rows do not differ: the interval vlkd reports
(`bootstrap.difference_interval`) against the bootstrap over seeds and examples it replaced, same simulated runs.

    python -m bench.calibration [--examples 2000] [--reps 1000] [--old-reps 200] [--accuracy 0.85]

Null experiments: each run of either row scores `--accuracy` plus a seed effect (normal, SD in points), and gets
each dev example right with that probability, independently. A grid of seeds per row x seed SD; each cell simulates
`--reps` pairs of rows for the current interval (on Outcomes strings, as results.json holds them) and `--old-reps`
for the old one (2,000 resamples each, so slower). A calibrated 95% interval excludes 0 in about 5% of them; the
binomial SD of a rate near 5% is 0.7 points at 1,000 repetitions, 1.5 at 200. A last table gives the current
interval's power against a true difference of 1 and 2 points.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlkd.evaluation.bootstrap import LEVEL, difference_interval

SEEDS = (2, 3, 5, 10)
SEED_SDS = (0.3, 1.0, 2.0, 3.5)
_OLD_RESAMPLES = 2000


def null_runs(rng: np.random.Generator, seeds: int, seed_sd: float, examples: int, accuracy: float) -> np.ndarray:
    """[seeds, examples] 0/1 outcomes of one row's runs: accuracy + a seed effect (SD in points) per run."""
    per_run = np.clip(accuracy + rng.normal(0.0, seed_sd / 100, (seeds, 1)), 0.0, 1.0)
    return (rng.random((seeds, examples)) < per_run).astype(np.uint8)


def as_outcomes(runs: np.ndarray) -> list[str]:
    """Outcome strings, one per run, as results.json's `correct` holds them."""
    return [(row + ord("0")).tobytes().decode("ascii") for row in runs.astype(np.uint8)]


def old_interval(model: np.ndarray, baseline: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The interval vlkd reported before (in points): a percentile bootstrap drawing the dev examples (the same
    draw for both rows) and, independently per row, the seeds with replacement."""
    examples = model.shape[1]
    picked = rng.integers(0, examples, (_OLD_RESAMPLES, examples)) + examples * np.arange(_OLD_RESAMPLES)[:, None]
    weights = np.bincount(picked.ravel(), minlength=_OLD_RESAMPLES * examples).reshape(_OLD_RESAMPLES, examples)
    replicates = np.zeros(_OLD_RESAMPLES)
    for runs, sign in ((model, 1.0), (baseline, -1.0)):
        per_seed = weights @ runs.T.astype(float) / examples  # [R, S]
        seeds = rng.integers(0, len(runs), (_OLD_RESAMPLES, len(runs)))
        replicates += sign * np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    low, high = np.quantile(replicates * 100, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def exclusion_rate(
    seeds: int, seed_sd: float, reps: int, examples: int, accuracy: float, old: bool, shift: float = 0.0
) -> float:
    """The share of `reps` simulated pairs of rows (the model's `shift` points better) whose interval excludes 0."""
    rng = np.random.default_rng([seeds, int(seed_sd * 10), int(old)])
    excluded = 0
    for _ in range(reps):
        model = null_runs(rng, seeds, seed_sd, examples, accuracy + shift / 100)
        baseline = null_runs(rng, seeds, seed_sd, examples, accuracy)
        if old:
            low, high = old_interval(model, baseline, rng)
        else:
            interval = difference_interval([(as_outcomes(model), as_outcomes(baseline))])
            low, high = interval.low, interval.high
        excluded += not low <= 0.0 <= high
    return excluded / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--old-reps", type=int, default=200)
    parser.add_argument("--accuracy", type=float, default=0.85)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"{args.examples} dev examples, accuracy {args.accuracy:.0%}; % of intervals excluding 0 under the null")
    print("| seeds per row | seed SD (points) | before (bootstrap) | after (t over seeds) |")
    print("|---|---|---|---|")
    for seeds in SEEDS:
        for seed_sd in SEED_SDS:
            rates = [
                exclusion_rate(seeds, seed_sd, reps, args.examples, args.accuracy, old)
                for old, reps in ((True, args.old_reps), (False, args.reps))
            ]
            print(f"| {seeds} | {seed_sd} | {rates[0]:.1%} | {rates[1]:.1%} |", flush=True)
    print("\nPower of the current interval (% excluding 0) against a true difference")
    print("| seeds per row | seed SD (points) | +1 point | +2 points |")
    print("|---|---|---|---|")
    for seeds in SEEDS:
        for seed_sd in (0.3, 2.0):
            power = [exclusion_rate(seeds, seed_sd, args.reps, args.examples, args.accuracy, False, s) for s in (1, 2)]
            print(f"| {seeds} | {seed_sd} | {power[0]:.0%} | {power[1]:.0%} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
