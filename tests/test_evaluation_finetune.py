"""Finetuning a tiny random BERT on the synthetic tasks: it learns SST-2, every kind of head runs and scores in
range, MNLI's model scores GLUE's diagnostic, runs are deterministic; QA pre- and post-processing by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vlkd.data.synth import SynthConfig, SynthSummary, generate
from vlkd.data.text import corpus_lines, save_tokenizer, train_tokenizer
from vlkd.errors import NotFoundError, VlkdError
from vlkd.evaluation import qa
from vlkd.evaluation.bootstrap import cluster_count, digits
from vlkd.evaluation.correlation import averaged_r3_pseudo_values
from vlkd.evaluation.finetune import evaluate, finetune, finetune_optim, load_tokenizer, run_fields, train
from vlkd.evaluation.flags import did_not_learn
from vlkd.evaluation.readers import Question
from vlkd.evaluation.tasks import TASKS, get_task, read_train
from vlkd.optim import build_optimizer
from vlkd.specs.evaluate import FinetuneSpec

SMALL = SynthConfig(num_videos=1, corpus_paragraphs=5, task_train_examples=40, task_dev_examples=20)
# Smoke runs: one pass. Learning runs: a tiny model needs many more steps at a higher rate than the paper's.
SMOKE = FinetuneSpec(epochs=1, lr=1e-3, batch_size=8, max_len=64)
LEARN = FinetuneSpec(epochs=30, lr=2e-3, batch_size=8, max_len=32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matrices: extra threads cost more than they save, and on a busy 2-core machine they stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "data", SMALL)


def _texts(synth: SynthSummary) -> Iterator[str]:
    yield from corpus_lines((synth.text_dir / "corpus.txt").read_text().splitlines())
    for name, task in TASKS.items():
        for example in read_train(task, synth.tasks_dir / name) if task.train else ():
            for attribute in ("text_a", "text_b", "question", "context"):
                if getattr(example, attribute, None):
                    yield getattr(example, attribute)
            yield from getattr(example, "endings", ())


@pytest.fixture(scope="module")
def model_dir(synth: SynthSummary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BertForMaskedLM saved with its tokenizer, as a student artifact holds them."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = train_tokenizer(lambda: _texts(synth), vocab_size=1000, min_frequency=1, lowercase=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    out = tmp_path_factory.mktemp("student")
    BertForMaskedLM(config).save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def _in_range(metrics: dict[str, float], low: float = 0.0) -> bool:
    return all(low <= value <= 100.0 for value in metrics.values())


@pytest.fixture(scope="module")
def learnt_sst2(model_dir: Path, synth: SynthSummary) -> dict:
    return finetune(model_dir, "sst2", synth.tasks_dir / "sst2", LEARN, seed=0)


def test_finetuning_learns_sst2(learnt_sst2: dict) -> None:
    assert learnt_sst2["examples"] == 40
    assert learnt_sst2["metrics"]["accuracy"] > 75.0
    assert learnt_sst2["seconds"] > 0


def test_a_run_logs_its_mean_loss_over_about_a_hundred_windows(learnt_sst2: dict) -> None:
    """150 steps (30 epochs of 40 examples / 8): windows of 2 steps, 75 points, the loss falling."""
    steps = [step for step, _ in learnt_sst2["loss_curve"]]
    assert steps == list(range(2, 151, 2))
    assert did_not_learn(learnt_sst2["loss_curve"]) is None


def test_a_run_scores_dev_after_every_epoch_and_the_last_is_its_result(learnt_sst2: dict) -> None:
    assert [epoch for epoch, _ in learnt_sst2["dev_curve"]] == list(range(1, 31))
    assert learnt_sst2["dev_curve"][-1][1] == learnt_sst2["metrics"]["accuracy"]


def test_a_run_keeps_its_dev_answers_per_label_and_per_example(learnt_sst2: dict) -> None:
    assert set(learnt_sst2["predicted"]) == {"0", "1"} and sum(learnt_sst2["predicted"].values()) == 20
    correct = learnt_sst2["correct"]
    assert len(correct) == 20 and set(correct) <= {"0", "1"}
    assert 100 * correct.count("1") / 20 == pytest.approx(learnt_sst2["metrics"]["accuracy"])


def test_a_run_that_cannot_learn_is_flagged(model_dir: Path, synth: SynthSummary) -> None:
    frozen = SMOKE.model_copy(update={"epochs": 4, "lr": 1e-9})
    result = finetune(model_dir, "sst2", synth.tasks_dir / "sst2", frozen, seed=0)
    assert did_not_learn(result["loss_curve"]).startswith("did not learn: loss 0.")


def test_same_seed_same_model(model_dir: Path, synth: SynthSummary) -> None:
    first, second = (train(model_dir, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=3) for _ in range(2))
    other = train(model_dir, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=4)
    weights = [dict(m.model.named_parameters()) for m in (first, second, other)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not torch.equal(weights[0]["classifier.weight"], weights[2]["classifier.weight"])


def test_progress_reports_every_step(model_dir: Path, synth: SynthSummary) -> None:
    calls = []
    train(model_dir, "qnli", synth.tasks_dir / "qnli", SMOKE, 0, progress=lambda *args: calls.append(args))
    assert [(step, total) for step, total, _ in calls] == [(step, 5) for step in range(1, 6)]  # 40 examples / 8
    assert all(loss > 0 for _, _, loss in calls)


def test_max_steps_stops_training_early_and_the_schedule_ends_there(model_dir: Path, synth: SynthSummary) -> None:
    calls = []
    capped = SMOKE.model_copy(update={"epochs": 3, "max_steps": 7})  # 3 epochs of 5 steps, capped at 7
    finetuned = train(model_dir, "qnli", synth.tasks_dir / "qnli", capped, 0, progress=lambda *a: calls.append(a))
    assert [(step, total) for step, total, _ in calls] == [(step, 7) for step in range(1, 8)]
    assert [epoch for epoch, _ in finetuned.curves.dev] == [1.0, 1.4]  # scored where it stopped, too
    assert finetuned.curves.loss[-1][0] == 7


@pytest.mark.parametrize(
    ("task", "keys"),
    [
        ("squad_v1", {"exact_match", "f1"}),
        (
            "squad_v2",
            {"exact_match", "f1", "has_answer_exact_match", "has_answer_f1", "no_answer_exact_match", "no_answer_f1"},
        ),
        ("swag", {"accuracy"}),
        ("piqa", {"accuracy"}),
        ("tracie", {"accuracy", "start_accuracy", "end_accuracy", "story_exact_match"}),
        ("qqp", {"accuracy", "f1"}),
    ],
)
def test_every_kind_of_task_finetunes_and_scores(model_dir: Path, synth: SynthSummary, task: str, keys: set) -> None:
    result = finetune(model_dir, task, synth.tasks_dir / task, SMOKE, seed=0)
    assert set(result["metrics"]) == keys
    assert _in_range(result["metrics"])
    main = get_task(task).main_metric
    assert 100 * result["correct"].count("1") / len(result["correct"]) == pytest.approx(result["metrics"][main])
    assert len(result["dev_curve"]) == 1 and result["loss_curve"]
    assert sum(result["predicted"].values()) == len(result["correct"])  # extractive QA: `answer_counts`
    clusters = result["clusters"]  # each dev example's paragraph or story; the other tasks' examples stand alone
    assert (clusters is not None) == (task in ("squad_v1", "squad_v2", "tracie"))
    assert clusters is None or cluster_count(clusters) == len(result["correct"])


def test_mnli_model_scores_both_dev_sets_and_the_diagnostic(model_dir: Path, synth: SynthSummary) -> None:
    mnli = train(model_dir, "mnli", synth.tasks_dir / "mnli", SMOKE, seed=0)
    scores = evaluate(mnli, "mnli", synth.tasks_dir / "mnli").metrics
    assert set(scores) == {"matched_accuracy", "mismatched_accuracy"} and _in_range(scores)
    scored = evaluate(mnli, "glue_diagnostic", synth.tasks_dir / "glue_diagnostic")
    diagnostic = scored.metrics
    assert len(scored.correct) == sum(scored.predicted.values()) == 20
    fields = run_fields(mnli, scored, "glue_diagnostic")
    assert fields["loss_curve"] == fields["dev_curve"] == []  # the MNLI run's curves are MNLI's
    # its outcomes, its sentence pairs (asked both ways: 10 clusters) and its categories' examples go to the record
    assert cluster_count(fields["clusters"]) == 20 and len(set(fields["clusters"].split())) == 10
    assert fields["subsets"] and all(len(members) == 20 for members in fields["subsets"].values())
    assert {"r3", "accuracy", "r3_average"} <= set(diagnostic)
    assert set(diagnostic) - {"r3", "accuracy", "r3_average"} <= {
        f"{measure}_{category}"
        for measure in ("r3", "acc")
        for category in ("lexical_semantics", "predicate_argument_structure", "logic", "knowledge")
    }
    assert _in_range(diagnostic, low=-100.0)
    # its predicted and gold labels, from which the comparison's R3s are the means of pseudo-values
    assert len(fields["labels"]) == len(fields["gold"]) == 20
    pairs = zip(fields["labels"], fields["gold"], strict=True)
    assert fields["correct"] == "".join("1" if predicted == gold else "0" for predicted, gold in pairs)
    categories = {metric: subset for metric, subset in TASKS["glue_diagnostic"].correlations.items() if subset}
    masks = [digits(fields["subsets"][subset]).astype(bool) for m, subset in categories.items() if m in diagnostic]
    assert masks  # some category is present
    values = averaged_r3_pseudo_values(digits(fields["labels"]), digits(fields["gold"]), 3, masks)
    assert 100 * values.mean() == pytest.approx(diagnostic["r3_average"], abs=1e-9)


def test_diagnostic_needs_the_mnli_model(model_dir: Path, synth: SynthSummary) -> None:
    sst2 = train(model_dir, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=0)
    with pytest.raises(VlkdError, match="glue_diagnostic is scored with a model finetuned on mnli, not on sst2"):
        evaluate(sst2, "glue_diagnostic", synth.tasks_dir / "glue_diagnostic")
    with pytest.raises(VlkdError, match="no training set"):
        finetune(model_dir, "glue_diagnostic", synth.tasks_dir / "glue_diagnostic", SMOKE, seed=0)


def test_a_directory_without_tokenizer_is_refused(tmp_path: Path, synth: SynthSummary) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(NotFoundError, match=r"lacks tokenizer\.json"):
        finetune(tmp_path, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=0)


def test_qa_refuses_a_window_too_short_for_question_and_passage() -> None:
    with pytest.raises(VlkdError, match="max_len=16 leaves too little room"):
        qa.window_limits(16)


def test_qa_window_labels_point_at_the_answer(model_dir: Path, synth: SynthSummary) -> None:
    """Short windows split passages; each window that holds the answer labels exactly its tokens, the others
    label [CLS]."""
    tokenizer = load_tokenizer(model_dir)
    questions = read_train(get_task("squad_v2"), synth.tasks_dir / "squad_v2")
    windows = qa.encode_windows(tokenizer, questions, max_len=32)
    assert len(windows["input_ids"]) > len(questions)  # some passages need several windows
    inside = outside = 0
    for i, index in enumerate(windows["overflow_to_sample_mapping"]):
        question, offsets = questions[index], windows["offset_mapping"][i]
        start, end = qa.answer_position(windows.sequence_ids(i), offsets, question)
        if (start, end) == (0, 0):
            outside += 1
            continue
        inside += 1
        text, _ = question.answers[0]
        assert question.context[offsets[start][0] : offsets[end][1]] == text
    assert inside > 0 and outside > 0


def test_best_span_never_ends_before_it_starts_nor_leaves_the_passage() -> None:
    sequence_ids = [None, 0, None, 1, 1, 1, 1, None]
    start = [9.0, 9.0, 0.0, 1.0, 0.0, 5.0, 0.0, 9.0]  # [CLS], question and [SEP] logits are never chosen
    end = [9.0, 9.0, 0.0, 4.0, 3.0, -1.0, -2.0, 9.0]  # the best end (3) comes before the best start (5)
    assert qa.best_span(start, end, sequence_ids) == (5.0, 3, 3)


def test_best_span_is_at_most_max_answer_tokens_long() -> None:
    sequence_ids = [None, 0, None, *[1] * 40, None]
    start, end = [0.0] * len(sequence_ids), [0.0] * len(sequence_ids)
    start[3], end[3 + qa.MAX_ANSWER_TOKENS], end[3 + qa.MAX_ANSWER_TOKENS - 1] = 5.0, 5.0, 1.0
    assert qa.best_span(start, end, sequence_ids) == (6.0, 3, 2 + qa.MAX_ANSWER_TOKENS)


def test_unanswerable_when_the_null_score_beats_the_best_span(model_dir: Path) -> None:
    tokenizer = load_tokenizer(model_dir)
    question = Question("q", "what colour ?", "a red circle moves up .", ())
    windows = qa.encode_windows(tokenizer, [question], max_len=64)
    passage = [k for k, s in enumerate(windows.sequence_ids(0)) if s == 1]
    red = next(k for k in passage if question.context[slice(*windows["offset_mapping"][0][k])] == "red")
    start, end = [0.0] * len(passage) * 3, [0.0] * len(passage) * 3
    start[red], end[red] = 2.0, 2.0
    for null, expected_v2 in ((3.0, "red"), (5.0, "")):
        start[0] = end[0] = null / 2
        assert qa.pick_answer(question, [0], windows, [start], [end], unanswerable=True) == expected_v2
        assert qa.pick_answer(question, [0], windows, [start], [end], unanswerable=False) == "red"


def test_a_run_loads_its_new_head_quietly_and_leaves_transformers_logging_as_it_was(
    model_dir: Path, synth: SynthSummary, capfd: pytest.CaptureFixture[str]
) -> None:
    """transformers' per-load report (the new head missing, the MLM head unexpected) and its progress bar would
    repeat in the eval job's log for every run; the run's own progress stays."""
    from transformers.utils import logging as transformers_logging

    before = (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled())
    capfd.readouterr()
    train(model_dir, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=0)
    printed = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in printed and "Loading weights" not in printed, printed
    assert (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()) == before


def test_a_checkpoint_missing_encoder_weights_is_refused(model_dir: Path, synth: SynthSummary, tmp_path: Path) -> None:
    """Finetuning would start those weights from random without a word."""
    import shutil

    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    weights = load_file(damaged / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if ".layer.1." not in name}
    save_file(kept, damaged / "model.safetensors", metadata={"format": "pt"})
    lost = len(weights) - len(kept)
    with pytest.raises(VlkdError, match=rf"lacks {lost} of the encoder's weights \(bert\.encoder\.layer\.1\."):
        train(damaged, "sst2", synth.tasks_dir / "sst2", SMOKE, seed=0)


def test_finetuning_takes_adams_epsilon_and_weight_decay_from_the_spec():
    """The authors' finetuning scripts use eps 1e-6 and no weight decay (README, Fidelity): a spec can ask for both."""
    optimizer = build_optimizer(finetune_optim(FinetuneSpec(eps=1e-6, weight_decay=0.0)), torch.nn.Linear(4, 2))
    assert {group["eps"] for group in optimizer.param_groups} == {1e-6}
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0}
    assert finetune_optim(FinetuneSpec()).eps == 1e-8
