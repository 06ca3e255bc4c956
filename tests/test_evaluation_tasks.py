"""Task registry and readers: the synthetic task files and small hand-written ones in each official format."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from vlkd.data.synth import SynthConfig, SynthSummary, generate
from vlkd.errors import DataError, NotFoundError, VlkdError
from vlkd.evaluation.layouts import LAYOUTS
from vlkd.evaluation.readers import MultipleChoice, Question, TextPair
from vlkd.evaluation.scoring import score_predictions
from vlkd.evaluation.task_scores import DIAGNOSTIC_CATEGORIES, score_diagnostic, score_squad, score_tracie
from vlkd.evaluation.tasks import TASKS, example_clusters, example_subsets, get_task, read_eval, read_train
from vlkd.specs.evaluate import TaskName

SMALL = SynthConfig(num_videos=1, corpus_paragraphs=5, task_train_examples=40, task_dev_examples=20)
# The official file each task's examples are read from: train, then the evaluation files by metric prefix.
FILES = {
    "sst2": ("train.tsv", {"": "dev.tsv"}),
    "qnli": ("train.tsv", {"": "dev.tsv"}),
    "qqp": ("train.tsv", {"": "dev.tsv"}),
    "mnli": ("train.tsv", {"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"}),
    "squad_v1": ("train-v1.1.json", {"": "dev-v1.1.json"}),
    "squad_v2": ("train-v2.0.json", {"": "dev-v2.0.json"}),
    "swag": ("train.csv", {"": "val.csv"}),
    "piqa": ("train.jsonl", {"": "valid.jsonl"}),
    "tracie": ("tracie_train.txt", {"": "tracie_test.txt"}),
    "glue_diagnostic": (None, {"": "diagnostic-full.tsv"}),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "data", SMALL)


def test_registry_holds_exactly_the_specs_task_names() -> None:
    assert set(TASKS) == set(typing.get_args(TaskName))


def test_unknown_task_lists_the_available_ones() -> None:
    with pytest.raises(VlkdError, match="unknown task 'cola'; available: sst2, qnli"):
        get_task("cola")


@pytest.mark.parametrize("name", list(FILES))
def test_reads_every_synthetic_file_with_all_its_examples(synth: SynthSummary, name: str) -> None:
    task, folder = get_task(name), synth.tasks_dir / name
    train_file, eval_files = FILES[name]
    counts = synth.task_examples[name]
    if train_file is None:
        with pytest.raises(VlkdError, match=r"no training set.*finetuned on mnli"):
            read_train(task, folder)
    else:
        assert len(read_train(task, folder)) == counts[train_file]
    evaluation = read_eval(task, folder)
    assert {prefix: len(examples) for prefix, examples in evaluation.items()} == {
        prefix: counts[file] for prefix, file in eval_files.items()
    }


def test_only_squad_tracie_and_the_diagnostic_have_clustered_examples() -> None:
    """SQuAD asks several questions per paragraph, TRACIE several statements per story, the GLUE diagnostic each
    sentence pair both ways; the other GLUE tasks', SWAG's and PIQA's examples each stand alone."""
    clustered = ["squad_v1", "squad_v2", "glue_diagnostic", "tracie"]
    assert [name for name, task in TASKS.items() if task.example_cluster] == clustered
    assert example_clusters(get_task("sst2"), [TextPair("a", None, "0")]) is None


@pytest.mark.parametrize(("name", "file"), [("squad_v1", "dev-v1.1.json"), ("squad_v2", "dev-v2.0.json")])
def test_squad_questions_are_clustered_by_their_paragraph(synth: SynthSummary, name: str, file: str) -> None:
    squad = json.loads((synth.tasks_dir / name / file).read_text())
    sizes = [len(paragraph["qas"]) for article in squad["data"] for paragraph in article["paragraphs"]]
    questions = read_eval(get_task(name), synth.tasks_dir / name)[""]
    assert example_clusters(get_task(name), questions) == " ".join(
        str(paragraph) for paragraph, size in enumerate(sizes) for _ in range(size)
    )
    assert max(sizes) > 1


def test_tracie_statements_are_clustered_by_their_story(synth: SynthSummary) -> None:
    """Two statements share a cluster exactly when they are about one story, wherever they sit in the file."""
    statements = read_eval(get_task("tracie"), synth.tasks_dir / "tracie")[""]
    clusters = example_clusters(get_task("tracie"), statements).split()
    assert all(
        (clusters[i] == clusters[j]) == (statements[i].text_a == statements[j].text_a)
        for i in range(len(statements))
        for j in range(len(statements))
    )
    assert len(set(clusters)) < len(statements) // 2


def test_glue_pairs_keep_their_labels_in_the_vocabulary(synth: SynthSummary) -> None:
    sst2 = read_train(get_task("sst2"), synth.tasks_dir / "sst2")
    assert all(isinstance(e, TextPair) and e.text_b is None and e.label in {"0", "1"} for e in sst2)
    mnli = read_eval(get_task("mnli"), synth.tasks_dir / "mnli")["mismatched"]
    assert {e.label for e in mnli} == {"entailment", "neutral", "contradiction"}
    assert all(e.text_b for e in mnli)


def test_squad_answers_sit_at_their_offsets(synth: SynthSummary) -> None:
    for name in ("squad_v1", "squad_v2"):
        questions = read_train(get_task(name), synth.tasks_dir / name)
        for q in questions:
            assert all(q.context[start : start + len(text)] == text for text, start in q.answers)
    v1 = read_train(get_task("squad_v1"), synth.tasks_dir / "squad_v1")
    v2 = read_train(get_task("squad_v2"), synth.tasks_dir / "squad_v2")
    assert all(q.answers for q in v1)
    assert any(not q.answers for q in v2) and any(q.answers for q in v2)


def test_multiple_choice_examples(synth: SynthSummary) -> None:
    swag = read_eval(get_task("swag"), synth.tasks_dir / "swag")[""]
    assert all(isinstance(e, MultipleChoice) and len(e.endings) == 4 and 0 <= e.label < 4 for e in swag)
    piqa = read_train(get_task("piqa"), synth.tasks_dir / "piqa")
    assert all(len(e.endings) == 2 and e.label in (0, 1) and e.context.startswith("To ") for e in piqa)


def test_tracie_pairs_are_story_and_query(synth: SynthSummary) -> None:
    pairs = read_train(get_task("tracie"), synth.tasks_dir / "tracie")
    assert all(p.text_b.startswith("event:") and "story:" not in p.text_a for p in pairs)
    assert {p.label for p in pairs} == {"positive", "negative"}


def test_diagnostic_keeps_its_category_tags(synth: SynthSummary) -> None:
    examples = read_eval(get_task("glue_diagnostic"), synth.tasks_dir / "glue_diagnostic")[""]
    assert all(
        set(e.meta) == {"Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge"} for e in examples
    )
    assert all(any(tag for tag in e.meta.values()) for e in examples)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_glue_tsv_has_no_quoting(tmp_path: Path) -> None:
    folder = _write(tmp_path, "train.tsv", 'sentence\tlabel\nit \'s a "great" film , "really\t1\n')
    [pair] = read_train(get_task("sst2"), folder)
    assert pair == TextPair('it \'s a "great" film , "really', None, "1")


def test_qqp_skips_the_broken_lines_of_its_official_train_file(tmp_path: Path) -> None:
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    folder = _write(tmp_path, "train.tsv", header + "0\t1\t2\twhy ?\twhy not ?\t0\n1\t3\t4\tbroken line\n")
    assert read_train(get_task("qqp"), folder) == [TextPair("why ?", "why not ?", "0")]


def test_a_short_glue_row_names_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, "dev.tsv", "sentence\tlabel\ngood .\t1\nno label\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 1 fields, the header has 2"):
        read_eval(get_task("sst2"), folder)


def test_mnli_dev_reads_the_gold_label_after_five_votes(tmp_path: Path) -> None:
    columns = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse"]
    columns += ["sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    columns += [f"label{i}" for i in range(1, 6)] + ["gold_label"]
    row = ["0", "1", "1n", "slate", "( a b )", "( c d )", "(ROOT)", "(ROOT)", "a b", "c d"]
    row += ["neutral", "neutral", "contradiction", "neutral", "entailment", "neutral"]
    text = "\t".join(columns) + "\n" + "\t".join(row) + "\n"
    folder = _write(tmp_path, "dev_matched.tsv", text)
    _write(folder, "dev_mismatched.tsv", text.replace("slate", "letters"))
    evaluation = read_eval(get_task("mnli"), folder)
    assert evaluation["matched"] == evaluation["mismatched"] == [TextPair("a b", "c d", "neutral")]


def test_a_label_outside_the_vocabulary_is_an_error(tmp_path: Path) -> None:
    folder = _write(tmp_path, "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tq ?\ts .\tmaybe\n")
    with pytest.raises(VlkdError, match=r"labels \['maybe'\] are not in its vocabulary"):
        read_eval(get_task("qnli"), folder)


def test_squad_v2_impossible_question_has_no_answers(tmp_path: Path) -> None:
    squad = {
        "version": "v2.0",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "A red circle moves up.",
                        "qas": [
                            {
                                "question": "What colour?",
                                "id": "q1",
                                "is_impossible": False,
                                "answers": [{"text": "red", "answer_start": 2}],
                            },
                            {
                                "question": "What does the blue one do?",
                                "id": "q2",
                                "is_impossible": True,
                                "answers": [],
                                "plausible_answers": [{"text": "moves up", "answer_start": 13}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    folder = _write(tmp_path, "dev-v2.0.json", json.dumps(squad))
    assert read_eval(get_task("squad_v2"), folder)[""] == [
        Question("q1", "What colour?", "A red circle moves up.", (("red", 2),)),
        Question("q2", "What does the blue one do?", "A red circle moves up.", ()),
    ]


def test_a_file_that_is_not_squad_is_named(tmp_path: Path) -> None:
    folder = _write(tmp_path, "train-v1.1.json", json.dumps({"version": "1.1"}))
    with pytest.raises(DataError, match=r"train-v1\.1\.json: not a SQuAD file"):
        read_train(get_task("squad_v1"), folder)


def test_swag_csv_with_quoted_fields(tmp_path: Path) -> None:
    header = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    row = (
        '7,lsmdc_1,11,"He waves, smiles. She","He waves, smiles.",She,gold,nods.,runs.,"sits, then stands.",sings.,2\n'
    )
    folder = _write(tmp_path, "val.csv", header + row)
    [example] = read_eval(get_task("swag"), folder)[""]
    assert example == MultipleChoice(
        "He waves, smiles.", ("She nods.", "She runs.", "She sits, then stands.", "She sings."), 2
    )


def test_piqa_pairs_goals_with_the_labels_file(tmp_path: Path) -> None:
    goal = {"id": "x", "goal": "To open a jar, you can", "sol1": "twist the lid.", "sol2": "shake it."}
    folder = _write(tmp_path, "valid.jsonl", json.dumps(goal) + "\n")
    _write(folder, "valid-labels.lst", "0\n")
    assert read_eval(get_task("piqa"), folder)[""] == [
        MultipleChoice("To open a jar, you can", ("twist the lid.", "shake it."), 0)
    ]
    _write(folder, "valid-labels.lst", "0\n1\n")
    with pytest.raises(DataError, match=r"has 1 examples but .*valid-labels\.lst has 2 labels"):
        read_eval(get_task("piqa"), folder)
    _write(folder, "valid-labels.lst", "2\n")
    with pytest.raises(VlkdError, match=r"answer indices \[2\] point at no choice"):
        read_eval(get_task("piqa"), folder)


def test_tracie_line_format(tmp_path: Path) -> None:
    line = "event: Tom's teeth are crooked ends before he has braces story: Tom needed braces. He got them."
    line += "\tanswer: negative"
    folder = _write(tmp_path, "tracie_test.txt", line + "\n\n")
    assert read_eval(get_task("tracie"), folder)[""] == [
        TextPair(
            "Tom needed braces. He got them.", "event: Tom's teeth are crooked ends before he has braces", "negative"
        )
    ]
    _write(folder, "tracie_test.txt", "event: no story here\tanswer: positive\n")
    with pytest.raises(DataError, match=r"tracie_test.txt:1: expected 'event: ... story: ..."):
        read_eval(get_task("tracie"), folder)


def test_missing_file_names_what_the_folder_holds(tmp_path: Path) -> None:
    folder = _write(tmp_path, "train.tsv", "sentence\tlabel\n")
    with pytest.raises(NotFoundError, match=r"dev.tsv not found: .*present: train.tsv"):
        read_eval(get_task("sst2"), folder)


def test_tracie_scores_as_its_official_evaluator() -> None:
    story_a, story_b = "First, A. Then, B.", "First, C. Then, D."
    examples = [
        TextPair(story_a, "event: A starts before B", "positive"),
        TextPair(story_a, "event: A starts after B", "negative"),
        TextPair(story_b, "event: C ends before D", "positive"),
        TextPair(story_b, "event: C ends after D", "negative"),
    ]
    scores = score_tracie(["positive", "negative", "positive", "positive"], examples)
    assert scores == {"accuracy": 75.0, "start_accuracy": 100.0, "end_accuracy": 50.0, "story_exact_match": 50.0}


_CATEGORY = dict(zip(("lexical", "predicate", "logic", "knowledge"), DIAGNOSTIC_CATEGORIES, strict=True))


def _diagnostic(label: str, **tags: str) -> TextPair:
    """A diagnostic example with the given tags (`logic="Negation"`), untagged in the other categories."""
    meta = {c: "" for c in DIAGNOSTIC_CATEGORIES} | {_CATEGORY[k]: v for k, v in tags.items()}
    return TextPair("p", "h", label, meta)


def test_diagnostic_scores_r3_per_category() -> None:
    examples = [
        _diagnostic("entailment", logic="Negation"),
        _diagnostic("contradiction", logic="Negation"),
        _diagnostic("neutral", knowledge="Common sense"),
        _diagnostic("entailment", knowledge="World knowledge"),
    ]
    predictions = ["entailment", "contradiction", "entailment", "neutral"]
    scores = score_diagnostic(predictions, examples)
    assert scores["r3_logic"] == pytest.approx(100.0)
    assert scores["r3_knowledge"] == pytest.approx(-100.0)
    assert "r3_lexical_semantics" not in scores  # no example tagged with it
    assert scores["r3_average"] == pytest.approx(0.0)
    # all four: confusion [[1,0,1],[0,1,0],[1,0,0]] (e, c, n): t = (2,1,1), p = (2,1,1), c = 2, s = 4 -> (8-6)/(16-6)
    assert scores["r3"] == pytest.approx(20.0)


def test_diagnostic_scores_accuracy_per_category_over_the_examples_tagged_with_it() -> None:
    examples = [
        _diagnostic("entailment", lexical="Lexical entailment"),  # right
        _diagnostic("contradiction", lexical="Morphological negation", logic="Negation"),  # wrong
        _diagnostic("neutral", logic="Negation"),  # right
        _diagnostic("entailment", logic="Universal", knowledge="World knowledge"),  # wrong
        _diagnostic("neutral", knowledge="Common sense"),  # right
    ]
    predictions = ["entailment", "neutral", "neutral", "contradiction", "neutral"]
    scores = score_diagnostic(predictions, examples)
    # Lexical: 1 of 2 right; Logic: 1 of 3 (an example with two tags counts in both); Knowledge: 1 of 2; all: 3 of 5.
    assert scores["acc_lexical_semantics"] == pytest.approx(50.0)
    assert scores["acc_logic"] == pytest.approx(100 / 3)
    assert scores["acc_knowledge"] == pytest.approx(50.0)
    assert scores["accuracy"] == pytest.approx(60.0)
    assert "acc_predicate_argument_structure" not in scores  # no example tagged with it
    assert get_task("glue_diagnostic").main_metric == "r3_average"  # R3 stays GLUE's official measure


def test_table7_shows_each_diagnostic_category_as_r3_with_its_accuracy_beside_it() -> None:
    (table7,) = [layout for layout in LAYOUTS if "Table 7" in layout.title]
    diagnostic = [(c.metric, c.header) for c in table7.columns if c.task == "glue_diagnostic"]
    assert diagnostic == [
        ("r3_lexical_semantics", "Diag. Lexicon R3"),
        ("acc_lexical_semantics", "Diag. Lexicon Acc"),
        ("r3_predicate_argument_structure", "Diag. Predicate R3"),
        ("acc_predicate_argument_structure", "Diag. Predicate Acc"),
        ("r3_logic", "Diag. Logic R3"),
        ("acc_logic", "Diag. Logic Acc"),
        ("r3_knowledge", "Diag. Knowledge R3"),
        ("acc_knowledge", "Diag. Knowledge Acc"),
    ]
    tagged = _diagnostic("neutral", lexical="x", predicate="x", logic="x", knowledge="x")
    scores = score_diagnostic(["neutral", "entailment"], [tagged, _diagnostic("entailment")])
    assert {metric for metric, _ in diagnostic} <= set(scores)  # the columns name what the scorer reports


def test_squad_v2_scores_answerable_and_unanswerable_questions_apart() -> None:
    questions = [
        Question("1", "q", "c", (("red circle", 0),)),
        Question("2", "q", "c", (("up", 0),)),
        Question("3", "q", "c", ()),
        Question("4", "q", "c", ()),
    ]
    scores = score_squad(["the red circle", "down", "", "blue"], questions)
    assert scores == {
        "exact_match": 50.0,
        "f1": 50.0,
        "has_answer_exact_match": 50.0,
        "has_answer_f1": 50.0,
        "no_answer_exact_match": 50.0,
        "no_answer_f1": 50.0,
    }
    assert set(score_squad(["red"], questions[:1])) == {"exact_match", "f1"}


def test_qqp_reports_accuracy_and_duplicate_f1() -> None:
    examples = [TextPair("a", "b", label) for label in ("1", "0", "1", "0")]
    assert get_task("qqp").score(["1", "1", "0", "0"], examples) == {"accuracy": 50.0, "f1": 50.0}


def _half_right(task_name: str, examples: list) -> list:
    """Gold answers on even examples, a wrong one on odd ones."""
    task = get_task(task_name)
    predictions = []
    for i, example in enumerate(examples):
        if task.kind == "extractive_qa":
            gold = example.answers[0][0] if example.answers else ""
            predictions.append(gold if i % 2 == 0 else "zzz")
        elif task.kind == "multiple_choice":
            predictions.append(example.label if i % 2 == 0 else (example.label + 1) % len(example.endings))
        else:
            wrong = next(label for label in task.labels if label != example.label)
            predictions.append(example.label if i % 2 == 0 else wrong)
    return predictions


@pytest.mark.parametrize("name", [name for name, task in TASKS.items() if task.main_is_mean])
def test_the_main_metric_is_the_mean_of_its_per_example_outcomes(synth: SynthSummary, name: str) -> None:
    """What lets the report compare two models example by example: the outcomes add up to the number shown."""
    task = get_task(name)
    examples = read_eval(task, synth.tasks_dir / name)
    predictions = {prefix: _half_right(name, rows) for prefix, rows in examples.items()}
    scored = score_predictions(task, predictions, examples)
    assert scored.correct.count("1") == (len(scored.correct) + 1) // 2
    assert 100 * scored.correct.count("1") / len(scored.correct) == pytest.approx(scored.metrics[task.main_metric])


def test_only_the_diagnostics_correlation_is_no_mean_over_examples() -> None:
    assert [name for name, task in TASKS.items() if not task.main_is_mean] == ["glue_diagnostic"]
    assert all(task.example_correct is not None for task in TASKS.values())
    assert [name for name, task in TASKS.items() if task.example_subsets] == ["glue_diagnostic"]


def test_each_diagnostic_category_accuracy_is_the_mean_of_its_examples_outcomes(synth: SynthSummary) -> None:
    """What lets the report give a category's accuracy an interval: the outcomes over its subset add up to it."""
    task = get_task("glue_diagnostic")
    examples = read_eval(task, synth.tasks_dir / "glue_diagnostic")
    predictions = {"": _half_right("glue_diagnostic", examples[""])}
    scored = score_predictions(task, predictions, examples)
    accuracies = {m for m in scored.metrics if m.startswith("acc_")}
    assert accuracies and set(scored.subsets) == accuracies
    for metric, members in scored.subsets.items():
        outcomes = [right for right, member in zip(scored.correct, members, strict=True) if member == "1"]
        assert 100 * outcomes.count("1") / len(outcomes) == pytest.approx(scored.metrics[metric])
    assert 100 * scored.correct.count("1") / len(scored.correct) == pytest.approx(scored.metrics["accuracy"])


def test_a_diagnostic_pair_asked_both_ways_is_one_cluster() -> None:
    """`diagnostic-full.tsv`'s first rows: one pair of sentences, then the same two the other way round."""
    tags = {category: "" for category in DIAGNOSTIC_CATEGORIES} | {"Logic": "Negation"}
    examples = [
        TextPair("The cat sat on the mat.", "The cat did not sit on the mat.", "contradiction", tags),
        TextPair("The cat did not sit on the mat.", "The cat sat on the mat.", "contradiction", tags),
        TextPair("The cat sat on the mat.", "A cat sat.", "entailment", tags),
    ]
    assert example_clusters(get_task("glue_diagnostic"), examples) == "0 0 1"
    assert example_subsets(get_task("glue_diagnostic"), examples) == {"acc_logic": "111"}
    assert example_subsets(get_task("sst2"), examples) is None


def test_the_main_metric_is_measured_on_the_main_evaluation_file() -> None:
    assert get_task("mnli").main_eval == "matched" and get_task("sst2").main_eval == ""
