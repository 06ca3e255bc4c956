"""Differences from the baseline with their intervals, on constructed runs: in results.json, report.md, the
terminal table, and recomputed the same way when `vlkd report compare` merges documents; over the paragraphs of a
task whose dev examples come in clusters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlkd.errors import DataError
from vlkd.evaluation.bootstrap import cluster_labels, difference_interval
from vlkd.evaluation.differences import differences
from vlkd.evaluation.readers import TextPair
from vlkd.evaluation.report import NOISE, R3_NOTE, R3_UNKEPT_NOTE, render_markdown, render_table
from vlkd.evaluation.results import RunRecord, build_results, load_results, merge, write_results
from vlkd.evaluation.scoring import score_predictions
from vlkd.evaluation.table_text import parse_tables
from vlkd.evaluation.tasks import NLI_LABELS, TASKS

DEV = 100


BASE_QNLI = "1" * 70 + "0" * 30
SAME_QNLI = "0" * 3 + "1" * 67 + "1" * 4 + "0" * 26  # 3 of BASE's right answers wrong, 4 of its wrong ones right


def _run(row: str, task: str, seed: int, right: int, correct: str | None = None) -> RunRecord:
    correct = correct or "1" * right + "0" * (DEV - right)
    return RunRecord(row, f"student/{row}:v1", task, seed, {"accuracy": float(right)}, correct=correct)


def _results() -> dict:
    """Against BASE (60% on SST-2, 70% on QNLI): GOOD is right everywhere on SST-2 and equal on QNLI; SAME gives
    BASE's answers on SST-2 and on QNLI differs on 7 examples, one more of them right: a difference within
    noise."""
    records = [_run("BASE", "sst2", s, 60) for s in (0, 1)] + [_run("BASE", "qnli", s, 70, BASE_QNLI) for s in (0, 1)]
    records += [_run("GOOD", "sst2", s, 100) for s in (0, 1)] + [_run("GOOD", "qnli", s, 70) for s in (0, 1)]
    records += [_run("SAME", "sst2", s, 60) for s in (0, 1)] + [_run("SAME", "qnli", s, 71, SAME_QNLI) for s in (0, 1)]
    return build_results(records, "BASE")


def test_results_json_holds_each_difference_with_its_interval() -> None:
    differences = _results()["differences"]
    assert set(differences) == {"GOOD", "SAME"}  # not the baseline itself
    good = differences["GOOD"]
    assert good["sst2"]["difference"] == pytest.approx(40.0) and good["sst2"]["low"] > 0
    assert good["sst2"]["within_noise"] is False
    assert good["qnli"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "within_noise": True, "over_seeds": True}
    assert good["average"]["tasks"] == ["sst2", "qnli"]
    assert good["average"]["difference"] == pytest.approx(20.0) and not good["average"]["within_noise"]
    assert differences["SAME"]["qnli"]["within_noise"] is True
    assert differences["SAME"]["qnli"]["low"] < 0 < differences["SAME"]["qnli"]["high"]


def test_report_md_marks_a_difference_within_noise() -> None:
    header, good, same = parse_tables(render_markdown(_results()))[1]
    assert header == ["Model", "SST-2 Acc", "QNLI Acc", "Avg. (2 of 7)"]
    assert good[1].startswith("+40.0 [+") and NOISE not in good[1]
    assert good[2] == f"+0.0 [+0.0, +0.0] {NOISE}"
    assert same[2].startswith("+1.0 [-") and same[2].endswith(NOISE)


def test_the_terminal_table_marks_it_too() -> None:
    text = render_table(_results())
    differences = text.split("Difference from BASE\n", 1)[1].splitlines()
    same = next(line for line in differences if line.startswith("SAME"))
    assert same.count(NOISE) == 3  # SST-2 identical, QNLI one example, and so their average
    assert "over finetuning seeds" in text and "pretraining" in text


def test_compare_recomputes_intervals_with_the_same_rule() -> None:
    results = _results()
    runs = results["runs"]
    first = build_results([RunRecord(**r) for r in runs if r["row"] != "SAME"], "BASE")
    second = build_results([RunRecord(**r) for r in runs if r["row"] == "SAME"])
    merged = merge([first, second])
    assert merged["differences"] == results["differences"]
    assert NOISE in render_table(merged)


def test_runs_on_different_dev_sets_get_no_interval() -> None:
    records = [_run("BASE", "sst2", 0, 60), _run("B", "sst2", 0, 70)]
    records[1] = RunRecord(**{**records[1].__dict__, "correct": "1" * 70 + "0" * 50})  # 120 examples
    results = build_results(records, "BASE")
    assert results["differences"] == {}
    assert parse_tables(render_markdown(results))[1][1] == ["B", "+10.0", "+10.0"]


def test_a_v1_document_loads_without_intervals(tmp_path: Path) -> None:
    """Made before runs kept per-example outcomes: it is rebuilt in the current format, nothing to compare by."""
    run = {"row": "A", "ref": "student/a:v1", "lineage": {}, "task": "sst2", "seed": 0, "metrics": {"accuracy": 80.0}}
    v1 = {
        "format": "vlkd.eval-results/v1",
        "baseline": "A",
        "models": [{"row": "A", "ref": "student/a:v1", "lineage": {}, "cost": {"cpu_hours": 1.0}}],
        "tasks": ["sst2"],
        "runs": [run, {**run, "row": "B", "ref": "student/b:v1", "metrics": {"accuracy": 90.0}}],
        "summary": {},
        "retrieval": {},
        "notes": ["old"],
    }
    (tmp_path / "results.json").write_text(json.dumps(v1))
    results = load_results(tmp_path / "results.json")
    assert results["format"] == "vlkd.eval-results/v2" and results["differences"] == {}
    assert results["summary"]["B"]["sst2"]["accuracy"]["mean"] == 90.0
    assert results["models"][0]["cost"] == {"cpu_hours": 1.0} and results["notes"] == ["old"]
    assert parse_tables(render_markdown(results))[1][1] == ["B", "+10.0", "+10.0"]


PARAGRAPHS = cluster_labels([question // 5 for question in range(DEV)])  # 20 paragraphs of 5 questions


def _squad(row: str, seed: int, right: range | list[int], clusters: str | None = PARAGRAPHS) -> RunRecord:
    """A SQuAD run right on every question of the paragraphs `right`, wrong on the others."""
    correct = "".join(("1" if paragraph in right else "0") * 5 for paragraph in range(20))
    metrics = {"exact_match": correct.count("1") / DEV * 100}
    return RunRecord(row, f"student/{row}:v1", "squad_v1", seed, metrics, correct=correct, clusters=clusters)


def _squad_results(clusters: str | None = PARAGRAPHS) -> dict:
    """GOOD right on 12 paragraphs, BASE on 9 (8 of them GOOD's): +15 points, carried by 4 paragraphs."""
    records = [_squad("BASE", s, [*range(4, 12), 19], clusters) for s in (0, 1)]
    return build_results(records + [_squad("GOOD", s, range(12), clusters) for s in (0, 1)], "BASE")


def test_results_json_keeps_a_tasks_clusters_once_not_per_run() -> None:
    results = _squad_results()
    assert results["clusters"] == {"squad_v1": PARAGRAPHS}
    assert all("clusters" not in run for run in results["runs"])


def test_a_gain_carried_by_a_few_paragraphs_is_within_noise() -> None:
    """60 questions right against 45, but they are 12 paragraphs against 9: counted as 100 independent questions
    the gain would look clear of 0."""
    clustered = _squad_results()["differences"]["GOOD"]["squad_v1"]
    independent = _squad_results(clusters=None)["differences"]["GOOD"]["squad_v1"]
    assert clustered["difference"] == independent["difference"] == pytest.approx(15.0)
    assert clustered["within_noise"] and not independent["within_noise"]


def test_a_results_file_from_before_clusters_reads_as_independent_examples(tmp_path: Path) -> None:
    document = _squad_results()
    del document["clusters"]
    write_results(document, tmp_path / "results.json")
    loaded = load_results(tmp_path / "results.json")
    assert merge([loaded])["differences"] == _squad_results(clusters=None)["differences"]


def test_compare_keeps_each_tasks_clusters() -> None:
    results = _squad_results()
    merged = merge([results, results])
    assert merged["clusters"] == results["clusters"] and merged["differences"] == results["differences"]


def test_runs_that_cluster_one_task_differently_are_refused() -> None:
    records = [_squad("BASE", 0, [1]), _squad("GOOD", 0, [2], clusters=cluster_labels(range(DEV)))]
    with pytest.raises(DataError, match=r"runs on squad_v1 group its dev examples differently \(row 'GOOD', seed 0\)"):
        build_results(records, "BASE")


def test_runs_on_another_dev_set_than_the_clusters_get_no_interval() -> None:
    """A document from before clusters, on a 120-question dev set, compared with one on this 100-question one."""
    old = [RunRecord(row, f"student/{row}:v0", "squad_v1", 0, {}, correct="10" * 60) for row in ("BASE", "OLD")]
    results = build_results([*old, _squad("NEW", 0, range(10))], "BASE")
    assert results["clusters"] == {"squad_v1": PARAGRAPHS} and results["differences"] == {}


# --- the GLUE diagnostic: an interval per category's accuracy, and per R3 where the runs kept their labels ---------

PAIRS = cluster_labels([example // 2 for example in range(DEV)])  # 50 sentence pairs, each asked both ways
LOGIC = "1" * 40 + "0" * 60  # 20 pairs tagged Logic
KNOWLEDGE = "0" * 40 + "1" * 60  # 30 pairs tagged Knowledge
DIAGNOSTIC_SUBSETS = {"acc_logic": LOGIC, "acc_knowledge": KNOWLEDGE}


def _diagnostic(row: str, seed: int, correct: str, subsets: dict | None = DIAGNOSTIC_SUBSETS) -> RunRecord:
    """A diagnostic run right on the examples `correct` marks, with R3 made up (no outcome sums to it)."""
    metrics = {"r3_average": 10.0 * seed, "r3_logic": 10.0 * seed, "acc_logic": 100 * correct[:40].count("1") / 40}
    metrics["acc_knowledge"] = 100 * correct[40:].count("1") / 60
    return RunRecord(
        row, f"student/{row}:v1", "glue_diagnostic", seed, metrics, correct=correct, clusters=PAIRS, subsets=subsets
    )


def _diagnostic_results(subsets: dict | None = DIAGNOSTIC_SUBSETS) -> dict:
    """NST right on all of Logic, BASE on a fifth of it; both right on the same half of Knowledge."""
    knowledge = "1" * 30 + "0" * 30
    records = [_diagnostic("BASE", s, "1" * 8 + "0" * 32 + knowledge, subsets) for s in (0, 1, 2)]
    return build_results(records + [_diagnostic("NST", s, "1" * 40 + knowledge, subsets) for s in (0, 1, 2)], "BASE")


def test_each_diagnostic_categorys_accuracy_gets_an_interval_and_r3_none_without_labels() -> None:
    results = _diagnostic_results()
    assert results["subsets"] == {"glue_diagnostic": DIAGNOSTIC_SUBSETS}
    assert all("subsets" not in run for run in results["runs"])
    nst = results["differences"]["NST"]
    assert set(nst) == {"glue_diagnostic/acc_logic", "glue_diagnostic/acc_knowledge"}  # no R3: no labels kept
    assert nst["glue_diagnostic/acc_logic"]["difference"] == pytest.approx(80.0)
    assert not nst["glue_diagnostic/acc_logic"]["within_noise"]
    assert nst["glue_diagnostic/acc_knowledge"] == {
        "difference": 0.0,
        "low": 0.0,
        "high": 0.0,
        "within_noise": True,
        "over_seeds": True,
    }


def test_a_categorys_interval_is_the_one_of_its_examples_drawn_as_pairs() -> None:
    """The subset's outcomes, with the clusters of its examples numbered afresh: the interval of a dev set of
    those examples alone, its pairs drawn whole."""

    def seeds_of(knowledge: str) -> list[str]:  # 3 seeds, each flips one Knowledge example of its own
        return ["1" * 40 + knowledge[:seed] + "10"[int(knowledge[seed])] + knowledge[seed + 1 :] for seed in range(3)]

    model, baseline = seeds_of("11" * 20 + "00" * 10), seeds_of("00" * 10 + "11" * 20)  # each right on 20 of 30 pairs
    records = [
        RunRecord(row, f"{row}:v1", "glue_diagnostic", seed, {}, correct=c, clusters=PAIRS, subsets={"acc": KNOWLEDGE})
        for row, runs in (("BASE", baseline), ("M", model))
        for seed, c in enumerate(runs)
    ]
    entry = build_results(records, "BASE")["differences"]["M"]["glue_diagnostic/acc"]
    subset = ([run[40:] for run in model], [run[40:] for run in baseline])
    pairs = difference_interval([subset], [cluster_labels([example // 2 for example in range(60)])])
    independent = difference_interval([subset])
    assert (entry["difference"], entry["low"], entry["high"]) == pytest.approx(
        (pairs.difference, pairs.low, pairs.high), abs=1e-4
    )
    assert pytest.approx((entry["low"], entry["high"]), abs=1e-4) != (independent.low, independent.high)


def test_table_7_shows_the_accuracies_intervals_and_counts_them() -> None:
    report = render_markdown(_diagnostic_results())
    tables = parse_tables(report)
    header, nst = next(table for table in tables if table[0][0] == "Model" and table[1][0] == "NST")
    cells = dict(zip(header, nst, strict=True))
    assert cells["Diag. Logic Acc"].startswith("+80.0 [+") and NOISE not in cells["Diag. Logic Acc"]
    assert cells["Diag. Knowledge Acc"] == f"+0.0 [+0.0, +0.0] {NOISE}"
    assert cells["Diag. Logic R3"] == "+0.0"  # runs that kept no labels: a bare difference
    assert "1 of these 2 per-column intervals exclude 0" in report
    assert R3_UNKEPT_NOTE in report and R3_UNKEPT_NOTE not in render_markdown(_results())  # where the diagnostic ran


def _labelled(row: str, seed: int, predicted: str) -> RunRecord:
    """A diagnostic run that kept its labels, scored as the eval stage scores it (`score_diagnostic`)."""
    examples = [_pair_example(i) for i in range(DEV)]
    scored = score_predictions(TASKS["glue_diagnostic"], {"": [NLI_LABELS[int(d)] for d in predicted]}, {"": examples})
    return RunRecord(
        row,
        f"student/{row}:v1",
        "glue_diagnostic",
        seed,
        scored.metrics,
        correct=scored.correct,
        clusters=scored.clusters,
        subsets=scored.subsets,
        labels=scored.labels,
        gold=scored.gold,
    )


def _pair_example(i: int) -> TextPair:
    """Example i of a 100-example diagnostic: pair i // 2 asked both ways, its first 20 pairs tagged Logic, the
    last 30 Knowledge; gold labels in turn."""
    first, second = f"sentence {i // 2} a", f"sentence {i // 2} b"
    meta = {"Lexical Semantics": "", "Predicate-Argument Structure": "", "Logic": "", "Knowledge": ""}
    meta["Logic" if i < 40 else "Knowledge"] = "Tag"
    text_a, text_b = (first, second) if i % 2 == 0 else (second, first)
    return TextPair(text_a, text_b, NLI_LABELS[(i // 2) % 3], meta=meta)


def test_with_the_runs_labels_each_r3_and_the_main_metric_get_an_interval_and_table_7_shows_them() -> None:
    """NST predicts every gold label; the baseline only on Knowledge's pairs, elsewhere the next label. Its R3 on
    Logic is far below NST's (outside noise); on Knowledge they are equal."""
    gold = "".join(str((i // 2) % 3) for i in range(DEV))
    shifted = "".join(str((int(g) + 1) % 3) if i < 40 else g for i, g in enumerate(gold))
    records = [_labelled("BASE", s, shifted) for s in range(3)] + [_labelled("NST", s, gold) for s in range(3)]
    results = build_results(records, "BASE")
    assert results["gold"] == {"glue_diagnostic": gold} and all("gold" not in run for run in results["runs"])
    nst = results["differences"]["NST"]
    main = results["summary"]["NST"]["glue_diagnostic"]["r3_average"]["mean"]
    base = results["summary"]["BASE"]["glue_diagnostic"]["r3_average"]["mean"]
    assert nst["glue_diagnostic"]["difference"] == pytest.approx(main - base, abs=1e-3)  # the scored R3 average
    assert not nst["glue_diagnostic/r3_logic"]["within_noise"] and nst["glue_diagnostic/r3_logic"]["low"] > 100
    assert nst["glue_diagnostic/r3_knowledge"]["difference"] == 0.0 and nst["glue_diagnostic/r3_knowledge"]["high"] == 0
    assert not nst["glue_diagnostic/r3"]["within_noise"]
    report = render_markdown(results)
    header, row = next(table for table in parse_tables(report) if table[0][0] == "Model" and table[1][0] == "NST")
    assert dict(zip(header, row, strict=True))["Diag. Logic R3"].startswith("+")
    assert "[" in dict(zip(header, row, strict=True))["Diag. Logic R3"]
    assert R3_NOTE in report and R3_UNKEPT_NOTE not in report


def test_a_results_file_from_before_subsets_gives_the_categories_no_interval(tmp_path: Path) -> None:
    document = _diagnostic_results()
    del document["subsets"]
    write_results(document, tmp_path / "results.json")
    assert merge([load_results(tmp_path / "results.json")])["differences"] == {}
    assert _diagnostic_results(subsets=None)["differences"] == {}


def _diagnostic_null(rng: np.random.Generator, pairs: int, seeds: int) -> list[dict]:
    """Both rows' runs on a fresh draw of `pairs` sentence pairs, each asked both ways, from one population: a
    pair's difficulty and its tilt towards one row (which the two rows' means share, so neither is better) hold for
    both directions; each run adds its own luck."""
    difficulty = (rng.normal(1.0, 1.0, pairs) + rng.normal(0.0, 0.3, (2, pairs))).T.ravel()  # [pair, direction]
    tilt = rng.normal(0.0, 4.0, pairs).repeat(2) / 2
    runs = []
    for row, sign in (("BASE", -1), ("M", 1)):
        chance = 1 / (1 + np.exp(-(difficulty + sign * tilt + rng.normal(0.0, 0.2, (seeds, 1)))))
        for outcome in (rng.random(chance.shape) < chance).astype(np.uint8):
            runs.append({"row": row, "task": "glue_diagnostic", "correct": (outcome + ord("0")).tobytes().decode()})
    return runs


def test_under_a_null_in_the_diagnostics_shape_a_category_excludes_zero_about_5_percent() -> None:
    """552 sentence pairs asked both ways (1,104 examples, as `diagnostic-full.tsv`), each pair in one or two of the
    four categories (350-400 examples each, a third of the set), 3 seeds a row, rows equally good. Drawn as
    pairs, a category's interval excludes 0 near 5% of the time (4.3%); taken as independent examples, twice as
    often (10.1%): both directions of a pair move together."""
    rng, pairs, reps = np.random.default_rng(7), 552, 500
    tagged = np.zeros((4, pairs), dtype=bool)
    tagged[rng.integers(0, 4, pairs), np.arange(pairs)] = True
    tagged[rng.integers(0, 4, pairs), np.arange(pairs)] |= rng.random(pairs) < 0.4
    members = {f"acc_{category}": "".join("11" if t else "00" for t in row) for category, row in enumerate(tagged)}
    subsets = {"glue_diagnostic": members}
    clusters = {"glue_diagnostic": cluster_labels(np.arange(pairs).repeat(2).tolist())}
    excluded = {"pairs": 0, "independent": 0}
    for _ in range(reps):
        runs = _diagnostic_null(rng, pairs, seeds=3)
        for way, by_task in (("pairs", clusters), ("independent", {})):
            entries = differences(runs, "BASE", by_task, subsets)["M"]
            assert len(entries) == 4
            excluded[way] += sum(not entry["within_noise"] for entry in entries.values())
    rates = {way: count / (4 * reps) for way, count in excluded.items()}
    print(f"\nexcluding 0 per category: {rates}")
    assert 0.03 <= rates["pairs"] <= 0.07 and rates["independent"] > max(0.08, 1.5 * rates["pairs"])
