"""How often a difference's 95% interval excludes 0 when the two rows do not differ: the interval vlkd reports
(`bootstrap.difference_interval`) against the bootstrap over seeds and examples it replaced, same simulated runs.

    python -m bench.calibration [--examples 2000] [--reps 1000] [--old-reps 200] [--accuracy 0.85]

Null experiments: each run of either row scores `--accuracy` plus a seed effect (normal, SD in points), and gets
each dev example right with that probability, independently. A grid of seeds per row x seed SD; each cell simulates
`--reps` pairs of rows for the current interval (on Outcomes strings, as results.json holds them) and `--old-reps`
for the old one (2,000 resamples each, so slower). A calibrated 95% interval excludes 0 in about 5% of them; the
binomial SD of a rate near 5% is 0.7 points at 1,000 repetitions, 1.5 at 200. A table gives the current
interval's power against a true difference of 1 and 2 points.

A last table has clustered nulls, as SQuAD's questions come in paragraphs: `CLUSTERS` paragraphs x `PER_CLUSTER`
questions, each paragraph and question with a difficulty both rows share, each paragraph tilted towards one row or
the other (normal on the logit scale, `TILT_SDS`; the rows stay equally good over dev sets), each run with its
luck on each paragraph. The same runs' interval, with the examples taken as independent and with the paragraphs
drawn whole (`bootstrap.Clusters`), `--reps` times per cell (`--old-reps` with one seed, where the interval is the
bootstrap fallback); ICC: the intra-paragraph correlation of one run's per-question disagreement (model right -
baseline right), measured on 20,000 simulated paragraphs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlkd.evaluation.bootstrap import LEVEL, cluster_labels, difference_interval

SEEDS = (2, 3, 5, 10)
SEED_SDS = (0.3, 1.0, 2.0, 3.5)
_OLD_RESAMPLES = 2000
CLUSTERS, PER_CLUSTER = 200, 10
TILT_SDS = (0.0, 0.5, 1.0, 2.0)
"""how much a paragraph favours one row over the other: the SD of the logit tilt, + half to one row, - half to the
other"""
CLUSTERED_SEEDS = (1, 3, 5)
PARAGRAPH_LUCK_SD = 0.3
"""a run's logit shift on each paragraph, its own"""


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


def clustered_null_runs(
    rng: np.random.Generator, seeds: int, tilt_sd: float, clusters: int, accuracy: float
) -> tuple[np.ndarray, np.ndarray]:
    """[seeds, clusters x PER_CLUSTER] 0/1 outcomes of the model's runs and the baseline's on one dev set of
    paragraphs (see the module docstring), questions of a paragraph next to each other."""
    shared = np.log(accuracy / (1 - accuracy)) + rng.normal(0.0, 1.0, clusters).repeat(PER_CLUSTER)
    shared += rng.normal(0.0, 1.0, clusters * PER_CLUSTER)
    tilt = rng.normal(0.0, tilt_sd, clusters).repeat(PER_CLUSTER) / 2

    def runs(logit: np.ndarray) -> np.ndarray:
        luck = rng.normal(0.0, PARAGRAPH_LUCK_SD, (seeds, clusters)).repeat(PER_CLUSTER, axis=1)
        chance = 1 / (1 + np.exp(-(logit + luck)))
        return (rng.random(chance.shape) < chance).astype(np.uint8)

    return runs(shared + tilt), runs(shared - tilt)


def disagreement_icc(tilt_sd: float, accuracy: float, clusters: int = 20_000) -> float:
    """The intra-paragraph correlation of one run's per-question disagreement (one-way ANOVA estimator)."""
    model, baseline = clustered_null_runs(np.random.default_rng(0), 1, tilt_sd, clusters, accuracy)
    disagreement = (model[0].astype(float) - baseline[0]).reshape(clusters, PER_CLUSTER)
    between = PER_CLUSTER * disagreement.mean(axis=1).var(ddof=1)
    within = disagreement.var(axis=1, ddof=1).mean()
    return float((between - within) / (between + (PER_CLUSTER - 1) * within))


def clustered_exclusion_rates(seeds: int, tilt_sd: float, reps: int, accuracy: float) -> tuple[float, float]:
    """The shares of `reps` clustered nulls whose interval excludes 0: examples taken as independent, and
    paragraphs drawn whole."""
    rng = np.random.default_rng([seeds, int(tilt_sd * 100), 2])
    paragraphs = cluster_labels(np.arange(CLUSTERS).repeat(PER_CLUSTER).tolist())
    excluded = np.zeros(2)
    for _ in range(reps):
        model, baseline = (as_outcomes(runs) for runs in clustered_null_runs(rng, seeds, tilt_sd, CLUSTERS, accuracy))
        for i, clusters in enumerate((None, paragraphs)):
            excluded[i] += not difference_interval([(model, baseline)], [clusters]).within_noise
    independent, whole = excluded / reps
    return float(independent), float(whole)


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
    print(f"\nClustered nulls: {CLUSTERS} paragraphs x {PER_CLUSTER} questions; % of intervals excluding 0")
    print("| seeds per row | paragraph tilt SD (logit) | ICC | questions independent | paragraphs drawn whole |")
    print("|---|---|---|---|---|")
    for tilt_sd in TILT_SDS:
        icc = disagreement_icc(tilt_sd, args.accuracy)
        for seeds in CLUSTERED_SEEDS:
            reps = args.old_reps if seeds == 1 else args.reps  # one seed: the bootstrap fallback, slower
            rates = clustered_exclusion_rates(seeds, tilt_sd, reps, args.accuracy)
            print(f"| {seeds} | {tilt_sd} | {icc:.3f} | {rates[0]:.1%} | {rates[1]:.1%} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
