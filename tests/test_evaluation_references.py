"""Reference rows: the majority class, a bag-of-words logistic regression and always no answer (SQuAD v2.0), on
the synthetic tasks and in the report, where they are labelled as references and never averaged nor compared."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from vlkd.data.synth import SynthConfig, SynthSummary, generate
from vlkd.evaluation.readers import MultipleChoice, TextPair
from vlkd.evaluation.references import REFERENCES, fit_reference, majority_class, score_reference
from vlkd.evaluation.report import render_markdown, render_table
from vlkd.evaluation.results import RunRecord, build_results
from vlkd.evaluation.table_text import parse_tables
from vlkd.evaluation.tasks import TASKS, get_task, read_eval
from vlkd.specs.evaluate import ReferenceName

SMALL = SynthConfig(num_videos=1, corpus_paragraphs=5, task_train_examples=120, task_dev_examples=40)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "data", SMALL)


def _scored(name: str, task: str, synth: SynthSummary):
    predict = fit_reference(name, get_task(task), synth.tasks_dir / task)
    return score_reference(predict, get_task(task), synth.tasks_dir / task)


def test_the_registry_holds_exactly_the_specs_reference_names() -> None:
    assert set(REFERENCES) == set(typing.get_args(ReferenceName))


def test_majority_is_the_most_frequent_training_label() -> None:
    train = [TextPair("a", None, label) for label in ("1", "0", "1")]
    assert majority_class(get_task("sst2"), train)(train[:2]) == ["1", "1"]


def test_a_majority_tie_goes_to_the_first_label_of_the_vocabulary_whatever_the_file_order() -> None:
    task = get_task("qnli")
    train = [TextPair("a", "b", label) for label in ("not_entailment", "entailment")]
    assert majority_class(task, train)(train) == majority_class(task, train[::-1])(train)
    assert majority_class(task, train)(train[:1]) == ["entailment"]


def test_multiple_choice_majority_is_an_answer_index() -> None:
    train = [MultipleChoice("c", ("x", "y"), label) for label in (1, 1, 0)]
    assert majority_class(get_task("piqa"), train)(train) == [1, 1, 1]


def test_majority_row_scores_the_dev_share_of_that_label(synth: SynthSummary) -> None:
    task = get_task("sst2")
    scored = _scored("majority", "sst2", synth)
    dev = read_eval(task, synth.tasks_dir / "sst2")[""]
    (label,) = [label for label, count in scored.predicted.items() if count]
    assert scored.predicted[label] == len(dev)
    assert scored.metrics["accuracy"] == pytest.approx(100 * sum(e.label == label for e in dev) / len(dev))
    assert scored.correct == "".join("1" if e.label == label else "0" for e in dev)


def test_bag_of_words_learns_what_words_give_away(synth: SynthSummary) -> None:
    """The synthetic SST-2's sentiment is in its words: the regression gets nearly every dev sentence right,
    far above the majority class."""
    words, majority = _scored("bag_of_words", "sst2", synth), _scored("majority", "sst2", synth)
    assert words.metrics["accuracy"] >= 90.0 > majority.metrics["accuracy"] + 20


def test_the_diagnostic_references_fit_on_mnli(synth: SynthSummary) -> None:
    predict = fit_reference("majority", get_task("mnli"), synth.tasks_dir / "mnli")
    scored = score_reference(predict, get_task("glue_diagnostic"), synth.tasks_dir / "glue_diagnostic")
    examples = read_eval(get_task("glue_diagnostic"), synth.tasks_dir / "glue_diagnostic")[""]
    assert scored.metrics["r3"] == 0.0  # one class everywhere: no correlation
    (everywhere,) = [label for label, count in scored.predicted.items() if count]  # the one class predicted
    assert scored.correct == "".join("1" if e.label == everywhere else "0" for e in examples)
    assert 100 * scored.correct.count("1") / len(scored.correct) == scored.metrics["accuracy"]


def _results() -> dict:
    records = [
        RunRecord("A", "student/a:v1", "sst2", 0, {"accuracy": 80.0}),
        RunRecord("A", "student/a:v1", "qnli", 0, {"accuracy": 60.0}),
        RunRecord("B", "student/b:v1", "sst2", 0, {"accuracy": 82.0}),
        RunRecord("B", "student/b:v1", "qnli", 0, {"accuracy": 62.0}),
    ]
    references = {
        "sst2": {
            "majority": {"metrics": {"accuracy": 50.0}, "correct": None, "predicted": None},
            "bag_of_words": {"metrics": {"accuracy": 95.0}, "correct": None, "predicted": None},
        },
        "qnli": {"majority": {"metrics": {"accuracy": 51.0}, "correct": None, "predicted": None}},
    }
    return build_results(records, "A", references=references)


def test_reference_rows_follow_the_models_and_are_never_averaged() -> None:
    values, differences = parse_tables(render_markdown(_results()))[:2]
    assert values == [
        ["Model", "SST-2 Acc", "QNLI Acc", "Avg. (2 of 7)"],
        ["A", "80.0", "60.0", "70.0"],
        ["B", "82.0", "62.0", "72.0"],
        ["majority class (reference)", "50.0", "51.0", "-"],
        ["bag-of-words LR (reference)", "95.0", "n/a", "-"],
    ]
    assert [row[0] for row in differences[1:]] == ["B"]  # references are not compared with the baseline


def test_reference_rows_are_in_the_terminal_table_and_every_metric_table() -> None:
    results = _results()
    assert "majority class (reference)" in render_table(results)
    sst2 = render_markdown(results).split("### SST-2", 1)[1]
    assert parse_tables(sst2)[0][-1] == ["bag-of-words LR (reference)", "95.0"]
    assert set(results["summary"]) == {"A", "B"}  # no reference in any model's numbers


def test_no_references_no_reference_rows() -> None:
    results = build_results([RunRecord("A", "student/a:v1", "sst2", 0, {"accuracy": 80.0})])
    assert "(reference)" not in render_markdown(results)


def _squad_file(folder: Path, name: str, answers: list[list[str]]) -> None:
    """A SQuAD file of one passage, a question per entry of `answers` (none: unanswerable, v2.0's is_impossible)."""
    context = "Paris is the capital of France."
    qas = [
        {"id": str(i), "question": "q?", "is_impossible": not texts,
         "answers": [{"text": t, "answer_start": context.index(t)} for t in texts]}
        for i, texts in enumerate(answers)
    ]  # fmt: skip
    (folder / name).write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))


def test_always_no_answer_scores_the_unanswerable_share_of_squad_v2(tmp_path: Path) -> None:
    task = get_task("squad_v2")
    _squad_file(tmp_path, "train-v2.0.json", [["Paris"], []])
    _squad_file(tmp_path, "dev-v2.0.json", [["Paris"], [], [], ["France"]])
    scored = score_reference(fit_reference("no_answer", task, tmp_path), task, tmp_path)
    assert scored.metrics["exact_match"] == 50.0 and scored.metrics["no_answer_exact_match"] == 100.0
    assert scored.metrics["has_answer_exact_match"] == 0.0 and scored.correct == "0110"
    assert scored.predicted == {"no answer": 4, "most frequent span": 0, "other spans": 0}


def test_always_no_answer_is_a_reference_of_squad_v2_only() -> None:
    applies = [name for name, task in TASKS.items() if REFERENCES["no_answer"].applies_to(task)]
    assert applies == ["squad_v2"]
    assert not REFERENCES["majority"].applies_to(get_task("squad_v2"))


def test_the_no_answer_row_is_in_the_qa_column_and_never_averaged() -> None:
    records = [RunRecord("A", "student/a:v1", task, 0, {"exact_match": 60.0}) for task in ("squad_v1", "squad_v2")]
    references = {"squad_v2": {"no_answer": {"metrics": {"exact_match": 50.1}, "correct": None, "predicted": None}}}
    values = parse_tables(render_markdown(build_results(records, references=references)))[0]
    assert values[-1] == ["always no answer (reference)", "n/a", "50.1", "-"]
