"""What the report says about its intervals: what they cover, the one-seed fallback's gap, and how many would
exclude 0 by chance among many comparisons."""

from __future__ import annotations

from vlkd.evaluation.report import comparisons, legend, render_markdown, render_table, report_notes
from vlkd.evaluation.results import RunRecord, build_results


def _records(seeds: tuple[int, ...]) -> list[RunRecord]:
    """BASE at 60 of 100 on SST-2 and QNLI; GOOD right on 95 on SST-2, equal on QNLI."""

    def run(row: str, task: str, seed: int, right: int) -> RunRecord:
        correct = "1" * (right + seed) + "0" * (100 - right - seed)
        return RunRecord(row, f"student/{row}:v1", task, seed, {"accuracy": float(right + seed)}, correct=correct)

    records = [run("BASE", task, s, 60) for task in ("sst2", "qnli") for s in seeds]
    return records + [run("GOOD", "sst2", s, 95) for s in seeds] + [run("GOOD", "qnli", s, 60) for s in seeds]


def _results(seeds: tuple[int, ...]) -> dict:
    return build_results(_records(seeds), "BASE")


def test_the_legend_says_what_an_interval_covers_and_what_not() -> None:
    text = " ".join(legend(_results((0, 1, 2))))
    assert "finetuning seeds" in text and "dev examples" in text
    assert "Not covered: pretraining" in text
    assert "one seed" not in text  # every row had three


def test_with_one_seed_the_legend_says_seed_noise_is_not_covered() -> None:
    text = " ".join(legend(_results((0,))))
    assert "paired bootstrap over dev examples" in text and "does not cover seed noise" in text


def test_each_table_counts_its_intervals_excluding_zero_against_chance() -> None:
    """Per table, not per report: an ablation section repeats rows of Table 1, whose intervals would count twice."""
    results = _results((0, 1, 2))
    (table1,) = [t for t in comparisons(results) if t.differences]
    line = "1 of these 2 per-column intervals exclude 0; with no real difference, about 0.1 would by chance alone."
    assert table1.multiplicity == [line]
    assert line in render_table(results) and line in render_markdown(results)
    assert not any("intervals exclude 0" in note for note in report_notes(results))


def test_a_table_of_one_comparison_has_no_multiplicity_line() -> None:
    records = [r for r in _records((0, 1, 2)) if r.task == "sst2"]
    (table1,) = [t for t in comparisons(build_results(records, "BASE")) if t.differences]
    assert table1.multiplicity == []
