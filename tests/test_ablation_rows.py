"""Tables 2, 4, 7 and the appendix's as the paper ran them: tables that list their rows (a teacher's language
model, a random init, students of other corpora or inits), a second text stage, the distillation-head axis, and
each ablation section showing its own columns without an average."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_ablations import PAPER, TINY, problems, raw

from vlkd.evaluation.report import comparisons
from vlkd.specs import load_spec, parse_spec


def test_the_paper_pipeline_expands_to_tables_2_to_7_and_the_appendix():
    tables = {t.name: t for t in load_spec(PAPER).ablation_tables()}
    assert list(tables) == ["table2", "table3", "table4", "table5", "table6", "table7", "head"]
    assert tables["table2"].rows() == [
        ("wiki103-6l-baseline (random init)", "No-Pretrain"),
        ("wiki103-6l-baseline", "Wiki103 (Formal language)"),
        ("howto100m-captions-6l-baseline", "HowTo100M (ASR captions)"),
    ]
    assert tables["table4"].rows() == [
        ("wiki103-6l-baseline", "Text PT"),
        ("howto100m-6l (teacher LM)", "Video PT"),
        ("wiki103-6l-two-stage", "Two-Stage PT"),
        ("+ KD-NST", "VidLanKD"),
    ]
    assert tables["table7"].rows() == [("wiki103-6l-baseline", "BERT6L/512H"), ("+ KD-NST", "+ KD-NST")]
    assert tables["table7"].tasks == ("glue_diagnostic", "piqa", "tracie")
    assert tables["head"].rows() == [
        ("wiki103-6l-baseline", "BERT6L/512H"),
        ("+ KD-NST (no distillation head)", "+ KD-NST (no distillation head)"),
        ("+ KD-NST", "+ KD-NST (distillation head)"),  # the student of Tables 3-7's NST rows
    ]
    # each listed row is made by the stage of its model
    assert [cell.stages for cell in tables["table4"].cells] == [
        ("distill:wiki103-6l-baseline",),
        ("teacher",),
        ("distill:wiki103-6l-two-stage",),
        ("distill:wiki103-6l-kd-nst",),
    ]


def test_the_rows_models_join_the_eval_a_random_init_and_the_teachers_language_model_once_each():
    spec = load_spec(PAPER)
    models = {m.row: m for m in spec.eval.models}
    assert (str(models["howto100m-6l (teacher LM)"].ref), models["howto100m-6l (teacher LM)"].init) == (
        "teacher/howto100m-6l:latest",
        "pretrained",
    )
    random = models["wiki103-6l-baseline (random init)"]
    assert (str(random.ref), random.init) == ("student/wiki103-6l-baseline:latest", "random")
    assert len(models) == len(spec.eval.models) == 16
    assert [t.tasks for t in spec.eval.tables if t.name == "table7"] == [["glue_diagnostic", "piqa", "tracie"]]


def test_table2s_captions_corpus_is_a_second_text_stage_with_the_pipelines_tokenizer():
    spec = load_spec(PAPER)
    stages = dict(spec.stages())
    captions = stages["text:howto100m-captions"]
    assert (captions.format, str(captions.tokenizer.artifact)) == ("captions", "tokenizer/wiki103:latest")
    keys = list(stages)
    assert keys.index("text:howto100m-captions") < keys.index("distill:howto100m-captions-6l-baseline")
    assert str(stages["distill:howto100m-captions-6l-baseline"].corpus) == "corpus/howto100m-captions:latest"
    assert str(stages["distill:wiki103-6l-two-stage"].init) == "teacher/howto100m-6l:latest"


def test_a_second_text_stage_needs_a_name_of_its_own():
    data = raw(PAPER)
    data["corpora"][0]["name"] = "wiki103"
    assert problems(data) == ["corpora[0].name: 'wiki103' names another text stage: give it its own"]


def test_a_row_naming_no_model_of_the_pipeline_is_an_error_at_its_path_listing_the_names():
    data = raw(TINY)
    data["ablations"]["table4"]["rows"][2]["student"] = "tiny-two-stages"
    (problem,) = problems(data)
    assert problem.startswith(
        "ablations.table4.rows[2].student: 'tiny-two-stages' is no student of the pipeline or its cells; students: "
    )
    assert problem.endswith(", tiny-kd-voken, tiny-two-stage") and "tiny-kd-nst, " in problem
    data = raw(TINY)
    data["ablations"]["table4"]["rows"][1]["teacher"] = "tiny-big"
    assert problems(data) == [
        "ablations.table4.rows[1].teacher: 'tiny-big' is no teacher of the pipeline or its cells; teachers: tiny"
    ]


def test_a_table_lists_rows_or_varies_axes_and_each_row_names_one_model():
    data = raw(TINY)
    data["ablations"]["table4"]["student"] = {"kd": [{"nst": 1.0}]}
    data["ablations"]["table4"]["rows"][0]["teacher"] = "tiny"
    data["ablations"]["table4"]["rows"][3]["label"] = "Text PT"
    assert problems(data) == [
        "ablations.table4.rows[0]: give one model: student: NAME or teacher: NAME",
    ]
    data["ablations"]["table4"]["rows"][0].pop("teacher")
    assert problems(data) == [
        "ablations.table4.rows: list rows or give axes, not both",
        "ablations.table4.rows[3].label: listed twice",
    ]
    data["ablations"]["table4"].pop("student")
    assert problems(data) == ["ablations.table4.rows[3].label: listed twice"]


def test_a_table_shows_only_the_eval_tasks_it_names():
    data = raw(TINY)
    data["ablations"]["table4"]["tasks"] = ["sst2", "piqa"]
    assert problems(data) == ["ablations.table4.tasks[1]: 'piqa' is not a task of the eval; tasks: sst2"]


def test_the_distillation_head_axis_names_only_the_cell_that_drops_the_head():
    data = raw(TINY)
    data["ablations"]["head"] = {"student": {"kd": [{"nst": 1.0}], "distill_head": [False, True]}}
    spec = parse_spec(data, "pipeline")
    stages = dict(spec.stages())
    assert not stages["distill:tiny-kd-nst-distill_head-false"].distill_head
    assert stages["distill:tiny-kd-nst"].distill_head  # Table 5's NST, unrenamed
    assert "distill:tiny-kd-crd" in stages  # other cells keep their names
    (head,) = [t for t in spec.ablation_tables() if t.name == "head"]
    assert [label for _, label in head.rows()] == [
        "BERT2L/64H",
        "+ KD-NST (no distillation head)",
        "+ KD-NST (distillation head)",
    ]


def _results(rows: dict[str, dict[str, float]], tables: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json with one seed per row and task, and each row's difference from the first row."""
    baseline = next(iter(rows))
    tasks = sorted({task for values in rows.values() for task in values})
    metric = {"sst2": "accuracy", "mnli": "matched_accuracy", "piqa": "accuracy"}
    return {
        "baseline": baseline,
        "models": [{"row": row, "ref": f"student/{i}:v1", "lineage": {}, "cost": {}} for i, row in enumerate(rows)],
        "tasks": tasks,
        "runs": [],
        "summary": {
            row: {t: {metric[t]: {"mean": v, "std": 0.0, "seeds": 1}} for t, v in values.items()}
            for row, values in rows.items()
        },
        "differences": {},
        "retrieval": {},
        "notes": [],
        "tables": tables,
    }


def test_an_ablation_section_shows_its_tasks_under_its_title_and_no_average():
    results = _results(
        {"base": {"sst2": 80.0, "mnli": 70.0, "piqa": 60.0}, "nst": {"sst2": 82.0, "mnli": 71.0, "piqa": 63.0}},
        [
            {"name": "table5", "title": "KD objectives (Table 5)", "rows": [["base", "BERT"], ["nst", "+ KD-NST"]]},
            {"name": "table7", "title": "Table 7", "rows": [["base", "BERT"], ["nst", "+ KD-NST"]], "tasks": ["piqa"]},
        ],
    )
    shown = {c.heading: c for c in comparisons(results)}
    assert shown["Downstream tasks (Table 1)"].header == ["Model", "SST-2 Acc", "MNLI Acc", "Avg. (2 of 7)"]
    # Table 5's section: every task, the Table 7 layout's under its own heading, and no average in either
    assert shown["KD objectives (Table 5)"].header == ["Model", "SST-2 Acc", "MNLI Acc"]
    assert shown["KD objectives (Table 5): Knowledge and reasoning (Table 7's tasks)"].header == ["Model", "PIQA Acc"]
    # a table naming its tasks shows those alone, under its title
    assert shown["Table 7"].header == ["Model", "PIQA Acc"]
    assert shown["Table 7"].rows[:2] == [["BERT", "60.0"], ["+ KD-NST", "63.0"]]
    assert not any(heading.startswith("Table 7:") for heading in shown)


def test_a_random_init_finetunes_the_architecture_with_a_new_init_per_seed(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from vlkd.models.bert import randomize_language_model

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(123)
    pretrained = BertForMaskedLM(config)
    weights = {}
    for seed in (0, 0, 1):
        folder = tmp_path / f"model-{len(weights)}"
        pretrained.save_pretrained(folder)
        (folder / "vocab.txt").write_text("kept")  # the tokenizer's files stay
        randomize_language_model(folder, seed)
        assert (folder / "vocab.txt").read_text() == "kept"
        loaded = BertForMaskedLM.from_pretrained(folder)
        assert loaded.config.to_diff_dict() == BertForMaskedLM(config).config.to_diff_dict()
        weights[len(weights)] = loaded.bert.embeddings.word_embeddings.weight.detach()
    original = pretrained.bert.embeddings.word_embeddings.weight.detach()
    assert not torch.equal(weights[0], original)
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])  # the seed decides


def test_an_eval_run_of_a_random_init_finetunes_fresh_weights_and_says_so_in_its_lineage(tmp_path, monkeypatch):
    from transformers import BertConfig, BertForMaskedLM

    from vlkd.artifacts import ArtifactStore, collect_files
    from vlkd.evaluation import finetune
    from vlkd.jobs import evaluate

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "student" / "language_model")
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    store.publish("dataset", "sst2", collect_files([tmp_path / "student"]))  # any files: the task is not read
    manifest = store.publish("student", "s", collect_files([tmp_path / "student"]), metrics={"steps": 8})
    published = BertForMaskedLM.from_pretrained(tmp_path / "student" / "language_model").state_dict()
    spec = parse_spec(
        {
            "stage": "eval",
            "name": "e",
            "models": ["student/s", {"ref": "student/s", "init": "random"}],
            "tasks": [{"name": "sst2", "data": "dataset/sst2"}],
            "seeds": [3],
            "retrieval": None,
        }
    )
    runs = evaluate.plan_runs(spec, store)
    assert [(run.row, run.ref, run.random_init) for run in runs] == [
        ("s", "student/s:v1", False),
        ("s (random init)", "student/s:v1", True),
    ]
    finetuned_from = []

    def train(model_dir, task, data, hp, seed, device):
        finetuned_from.append(BertForMaskedLM.from_pretrained(model_dir).state_dict())
        raise StopIteration  # what finetuning does with them is finetune's tests'

    monkeypatch.setattr(finetune, "train", train)
    for run in runs:
        with pytest.raises(StopIteration):
            evaluate.finetune_run(store, run, threads=1)
    as_published, randomized = finetuned_from
    assert all(torch.equal(as_published[name], published[name]) for name in published)
    assert not torch.equal(
        randomized["bert.embeddings.word_embeddings.weight"], published["bert.embeddings.word_embeddings.weight"]
    )
    assert evaluate.lineage_of(manifest, random_init=True) == {
        "model": "random init, no pretraining",
        "architecture": "student's, student/s:v1",
    }
