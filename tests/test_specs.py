"""Spec validation: the examples, every kind of mistake a user makes, and the pipeline's wiring."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from vlkd.errors import SpecError
from vlkd.specs import (
    STAGES,
    DistillSpec,
    ModelShape,
    PipelineSpec,
    Resources,
    TeacherSpec,
    load_spec,
    parse_spec,
    spec_schema,
)

EXAMPLES = sorted(Path(__file__).parent.parent.joinpath("examples").rglob("*.yaml"))
TEACHER = {"stage": "teacher", "name": "t", "features": "features/f:v1", "tokenizer": "tokenizer/w"}


def problems(data: dict, stage: str | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, stage)
    return info.value.problems


def test_examples_exist_for_every_stage():
    stages = {yaml.safe_load(p.read_text())["stage"] for p in EXAMPLES}
    assert stages == set(STAGES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_validates_and_matches_its_json_schema(path):
    spec = load_spec(path)
    raw = yaml.safe_load(path.read_text())
    jsonschema.validate(raw, spec_schema(raw["stage"]))
    assert type(spec).model_validate(spec.model_dump(mode="json")) == spec  # what a manifest stores reloads


def test_misspelt_nested_field_is_an_error_with_path_and_suggestion():
    assert problems({**TEACHER, "model": {"preset": "tiny", "hidden_sise": 32}}) == [
        "model.hidden_sise: unknown field; did you mean 'hidden_size'?"
    ]


def test_unknown_top_level_field_is_an_error():
    assert problems({**TEACHER, "epochs": 3}) == [
        "epochs: unknown field; valid fields: " + ", ".join(TeacherSpec.model_fields)
    ]


def test_wrong_type_names_the_field():
    (problem,) = problems({**TEACHER, "train": {"batch_size": "many"}})
    assert problem.startswith("train.batch_size: Input should be a valid integer")


@pytest.mark.parametrize(
    ("compile", "mode", "graphs"),
    [(False, None, False), (True, "default", False), ("reduce-overhead", "reduce-overhead", True),
     ("max-autotune", "max-autotune", True)],
)  # fmt: skip
def test_train_compile_is_off_on_or_a_mode_with_cuda_graphs(compile, mode, graphs):
    train = parse_spec({**TEACHER, "train": {"compile": compile}}).train
    assert (train.compile_mode, train.cuda_graphs) == (mode, graphs)


def test_an_unknown_compile_mode_lists_the_choices():
    assert problems({**TEACHER, "train": {"compile": "fast"}}) == [
        "train.compile: Input should be False, True, 'reduce-overhead' or 'max-autotune'"
    ]


def test_every_error_is_reported_at_once():
    found = problems({**TEACHER, "margin": -1, "train": {"max_steps": 0}, "objectives": ["ct", "itm"]})
    assert [p.split(":")[0] for p in found] == ["objectives[1]", "margin", "train.max_steps"]


def test_ref_of_the_wrong_kind_is_rejected():
    (problem,) = problems({**TEACHER, "features": "corpus/wiki103:v1"})
    assert problem == "features: expected a features artifact ref (e.g. features/NAME:v1), got corpus/wiki103:v1"


def test_malformed_ref_is_rejected():
    (problem,) = problems({**TEACHER, "tokenizer": "wiki103"})
    assert problem.startswith("tokenizer: invalid artifact ref 'wiki103'")


def test_missing_required_field():
    assert problems({"stage": "teacher", "name": "t", "tokenizer": "tokenizer/w"}) == [
        "features: required field is missing"
    ]


@pytest.mark.parametrize(
    ("preset", "shape"),
    [
        ("bert-6l-512h", (6, 512, 8, 2048)),  # the paper's BERT-6L/512H (footnote 3)
        ("bert-12l-768h", (12, 768, 12, 3072)),  # BERT-base (Devlin et al.): 12 layers, 768 wide, 12 heads, 3072 FFN
    ],
)
def test_the_paper_presets_are_the_papers_shapes(preset, shape):
    model = ModelShape(preset=preset)
    assert (model.num_layers, model.hidden_size, model.num_heads, model.intermediate_size) == shape
    assert model.max_position_embeddings == 512


def test_the_12l_768h_preset_builds_bert_base_with_about_110m_parameters():
    from transformers import BertForMaskedLM

    from vlkd.models.bert import bert_config

    model = BertForMaskedLM(bert_config(ModelShape(preset="bert-12l-768h"), vocab_size=30522))
    parameters = sum(p.numel() for p in model.parameters())
    assert 105e6 < parameters < 115e6, parameters  # BERT-base: 110M with bert-base-uncased's 30,522 tokens


def test_preset_fields_are_overridable_one_by_one():
    shape = ModelShape.model_validate({"preset": "bert-6l-512h", "num_layers": 4})
    assert (shape.num_layers, shape.hidden_size, shape.num_heads) == (4, 512, 8)


def test_bare_preset_name_is_a_shape():
    assert ModelShape.model_validate("tiny") == ModelShape(preset="tiny")


def test_unknown_preset_lists_the_choices():
    assert problems({**TEACHER, "model": {"preset": "bert-huge"}}) == [
        "model.preset: unknown preset 'bert-huge'; available: tiny, bert-6l-512h, bert-12l-768h"
    ]


def test_heads_must_divide_hidden_size():
    (problem,) = problems({**TEACHER, "model": {"preset": "tiny", "num_heads": 3}})
    assert "hidden_size (64) must be a multiple of num_heads (3)" in problem


def test_video_encoder_defaults_to_the_language_models_shape():
    spec = parse_spec({**TEACHER, "model": {"preset": "bert-6l-512h", "num_layers": 3}})
    assert spec.video_model == spec.model
    own = parse_spec({**TEACHER, "model": "tiny", "video_model": "bert-6l-512h"})
    assert own.video_model.hidden_size == 512


def test_distillation_needs_a_teacher_but_the_baseline_does_not():
    base = {"stage": "distill", "name": "s", "corpus": "corpus/c"}
    (problem,) = problems(base)
    assert "teacher: required to distill with nst, crd" in problem
    baseline = parse_spec({**base, "kd": {}})
    assert isinstance(baseline, DistillSpec) and baseline.kd == {} and baseline.teacher is None


def test_a_students_patience_is_the_same_with_or_without_a_train_block():
    base = {"stage": "distill", "name": "s", "corpus": "corpus/c", "kd": {}}
    written = parse_spec({**base, "train": {"max_steps": 300}})
    assert written.train.patience is None and parse_spec(base).train.patience is None
    assert parse_spec({**base, "train": {"patience": 2}}).train.patience == 2


def test_the_teacher_keeps_early_stopping_by_default():
    written = parse_spec({**TEACHER, "train": {"max_steps": 300}})
    assert parse_spec(TEACHER).train.patience == written.train.patience == 5


def _students(spec) -> list[DistillSpec]:
    if isinstance(spec, DistillSpec):
        return [spec]
    if isinstance(spec, PipelineSpec):
        return [student for key, student in spec.stages() if key.startswith("distill:")]
    return []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_students_train_a_fixed_budget(path):
    spec = load_spec(path)
    for student in _students(spec):
        assert student.train.patience is None, f"{path}: {student.name} would publish its best, not its last, weights"


def test_unknown_kd_objective_is_rejected():
    (problem,) = problems(
        {"stage": "distill", "name": "s", "corpus": "corpus/c", "teacher": "teacher/t", "kd": {"nts": 1}}
    )
    assert problem.startswith("kd.nts: Input should be 'soft_label', 'regression', 'nst'")


def test_credentials_in_a_spec_are_refused():
    (problem,) = problems({**TEACHER, "storage": {"root": "s3://bkt/x", "aws_secret_access_key": "abc"}})
    assert problem.startswith("storage: 'aws_secret_access_key': credentials never go in a spec")


def test_storage_root_must_be_s3_or_file():
    (problem,) = problems({**TEACHER, "storage": {"root": "gs://bkt/x"}})
    assert "use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH" in problem


def test_memory_is_a_kubernetes_quantity():
    assert Resources(memory="16Gi").memory_bytes == 16 * 2**30
    assert Resources(memory="500M").memory_bytes == 500 * 10**6
    assert Resources(memory="1.5Gi").memory_bytes == 3 * 2**29
    assert Resources(memory="1e3").memory_bytes == 1000


def test_a_fraction_of_a_byte_rounds_up_as_kubernetes_rounds_it():
    assert Resources(memory="1500m").memory_bytes == 2


@pytest.mark.parametrize("quantity", ["16 GB", "16GB", "16 Gi", "1_000Mi", "NaN", "-1Gi", ""])
def test_a_quantity_kubernetes_would_refuse_is_an_error_at_its_field(quantity):
    (problem,) = problems({**TEACHER, "resources": {"memory": quantity}})
    assert problem.startswith(f"resources.memory: invalid memory quantity {quantity!r}")


def test_head_memory_is_checked_at_validation_not_at_render():
    (problem,) = problems({**TEACHER, "kubernetes": {"head_memory": "8 GB"}})
    assert problem.startswith("kubernetes.head_memory: invalid memory quantity")


def test_pretrained_3d_encoder_needs_weights():
    spec = {"stage": "preprocess", "name": "f", "videos": "s3://bkt/videos", "encoder_3d": {"name": "resnext3d"}}
    (problem,) = problems(spec)
    assert problem.startswith("encoder_3d: weights: required for a pretrained resnext3d")
    ok = parse_spec({**spec, "encoder_3d": {"init": "random"}})
    assert ok.encoder_2d.weights == "hf://openai/clip-vit-base-patch32"  # the 2D default is on the hub


def test_3d_weights_from_a_hub_are_refused_at_validation():
    """No hub hosts the Kinetics 3D-ResNeXt checkpoints: an hf:// id would only fail later, as a missing file."""
    spec = {"stage": "preprocess", "name": "f", "videos": "s3://bkt/videos"}
    (problem,) = problems({**spec, "encoder_3d": {"name": "resnext3d", "weights": "hf://someone/resnext-101"}})
    assert problem.startswith("encoder_3d: resnext3d weights are a 3D-ResNets-PyTorch .pth checkpoint")
    ok = parse_spec({**spec, "encoder_3d": {"name": "resnext3d", "weights": "weights/resnext3d-101-kinetics"}})
    assert ok.encoder_3d.depth == 101  # the depth of the public Kinetics checkpoint the README names


def test_an_eval_task_reads_its_files_and_nothing_else():
    """A spec that validates must run: tasks come from their files, never from a hub download."""
    base = {"stage": "eval", "name": "e", "models": ["student/a"]}
    found = problems({**base, "tasks": [{"name": "sst2", "hf_dataset": "glue/sst2"}]})
    assert "tasks[0].hf_dataset: unknown field; valid fields: name, data, finetune" in found
    assert problems({**base, "tasks": [{"name": "sst2"}]}) == ["tasks[0].data: required field is missing"]


def test_data_source_must_be_a_uri_or_a_dataset_ref():
    spec = {"stage": "text", "name": "w", "corpus": "./wiki.txt"}
    (problem,) = problems(spec)
    assert "neither a URI nor a dataset ref" in problem
    assert parse_spec({**spec, "corpus": "dataset/wiki103:v2"}).corpus == "dataset/wiki103:v2"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "http://host/wiki.txt",
            "unsupported URI 'http://host/wiki.txt': use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH",
        ),
        ("weights/wiki", "'weights/wiki' is neither a URI nor a dataset ref: use s3://BUCKET/PREFIX"),
    ],
)
def test_a_data_source_that_is_neither_says_what_to_give(source, message):
    (problem,) = problems({"stage": "text", "name": "w", "corpus": source})
    assert problem.startswith(f"corpus: {message}")


@pytest.mark.parametrize(
    ("vocab", "message"),
    [
        ("hf://bert", "unsupported URI 'hf://bert': use s3://..., file:///..., hf://ORG/NAME or weights/NAME"),
        ("dataset/vocab", "'dataset/vocab' is not a weights source: use s3://..., file:///..., a Hugging Face hub"),
        ("vocab.txt", "'vocab.txt' is not a weights source"),
    ],
)
def test_a_weights_source_is_a_uri_a_hub_id_or_a_weights_ref(vocab, message):
    spec = {"stage": "text", "name": "w", "corpus": "dataset/wiki", "tokenizer": {"vocab": vocab}}
    (problem,) = problems(spec)
    assert problem.startswith(f"tokenizer.vocab: {message}")
    for good in ("hf://google-bert/bert-base-uncased", "s3://bkt/vocab.txt", "weights/bert-vocab:v1"):
        assert parse_spec({**spec, "tokenizer": {"vocab": good}}).tokenizer.vocab == good


def test_eval_task_overrides_merge_with_the_common_finetune_block():
    spec = parse_spec(
        {
            "stage": "eval",
            "name": "e",
            "models": ["student/a", {"ref": "student/b", "label": "B"}],
            "baseline": "a",
            "finetune": {"lr": 3e-5, "epochs": 2},
            "tasks": [
                {"name": "sst2", "data": "s3://bkt/sst2"},
                {"name": "squad_v1", "data": "s3://bkt/sq", "finetune": {"max_len": 384}},
            ],
        }
    )
    sst2, squad = spec.tasks
    assert (sst2.finetune.lr, sst2.finetune.epochs, sst2.finetune.max_len) == (3e-5, 2, 128)
    assert (squad.finetune.lr, squad.finetune.max_len) == (3e-5, 384)
    assert [m.row for m in spec.models] == ["a", "B"]


def test_eval_checks_rows_and_task_dependencies():
    base = {"stage": "eval", "name": "e", "models": ["student/a"]}
    (problem,) = problems({**base, "baseline": "zzz", "tasks": [{"name": "sst2", "data": "s3://bkt/x"}]})
    assert "baseline: 'zzz' is not a model row; rows: a" in problem
    (problem,) = problems({**base, "tasks": [{"name": "glue_diagnostic", "data": "s3://bkt/x"}]})
    assert "glue_diagnostic scores the MNLI-finetuned model" in problem


def test_an_eval_table_names_model_rows_each_once_under_labels_of_its_own():
    base = {"stage": "eval", "name": "e", "models": ["student/a", "student/b"], "baseline": "a"}
    base["tasks"] = [{"name": "sst2", "data": "s3://bkt/x"}]
    spec = parse_spec({**base, "tables": [{"name": "t5", "rows": ["a", {"row": "b", "label": "+ KD-NST"}]}]})
    assert [(r.row, r.shown) for r in spec.tables[0].rows] == [("a", "a"), ("b", "+ KD-NST")]

    def table(*rows):
        return {**base, "tables": [{"name": "t5", "rows": list(rows)}]}

    assert problems(table("a", "zzz")) == ["tables[0].rows[1]: 'zzz' is not a model row; rows: a, b"]
    assert problems(table("a", "a")) == ["tables[0].rows[1]: 'a' is listed twice"]
    assert problems(table("a", {"row": "b", "label": "a"})) == [
        "tables[0].rows[1]: another row of the table is labelled 'a'; set distinct labels"
    ]


def test_pipeline_wires_each_stage_to_the_outputs_before_it():
    spec = load_spec(Path(__file__).parent.parent / "examples/tiny/pipeline.yaml")
    assert isinstance(spec, PipelineSpec)
    assert [key for key, _ in spec.stages()] == [
        "preprocess",
        "text",
        "teacher",
        "distill:tiny-nst-crd",
        "distill:tiny-baseline",
        "eval",
    ]
    assert str(spec.teacher.features) == "features/tiny:latest"
    assert str(spec.teacher.tokenizer) == "tokenizer/tiny:latest"
    kd, baseline = spec.students
    assert str(kd.teacher) == "teacher/tiny:latest" and str(kd.corpus) == "corpus/tiny:latest"
    assert baseline.teacher is None
    assert [str(m.ref) for m in spec.eval.models] == ["student/tiny-nst-crd:latest", "student/tiny-baseline:latest"]
    assert spec.eval.baseline == "tiny-baseline"
    assert str(spec.eval.retrieval.teacher) == "teacher/tiny:latest"


def test_pipeline_storage_reaches_every_stage():
    raw = yaml.safe_load((Path(__file__).parent.parent / "examples/tiny/pipeline.yaml").read_text())
    spec = parse_spec({**raw, "storage": {"root": "s3://team-bucket/vlkd"}})
    assert {st.storage.root for _, st in spec.stages()} == {"s3://team-bucket/vlkd"}


def test_pipeline_students_need_distinct_names():
    raw = yaml.safe_load((Path(__file__).parent.parent / "examples/tiny/pipeline.yaml").read_text())
    raw["students"][1]["name"] = raw["students"][0]["name"]
    (problem,) = problems(raw)
    assert "students: each student needs its own name" in problem


def test_pipeline_wires_a_voken_students_video_bank_to_the_teachers_features():
    raw = yaml.safe_load((Path(__file__).parent.parent / "examples/tiny/pipeline.yaml").read_text())
    raw["students"][0]["kd"] = {"voken": 1.0}
    voken = parse_spec(raw).students[0]
    assert str(voken.kd_options.voken.features) == "features/tiny:latest"
    assert voken.kd_options.crd.buffer_size == 1024  # the student's own options stay


def test_stage_key_must_match_the_requested_stage():
    assert problems(TEACHER, "distill") == ["stage: this is a teacher spec, not a distill spec"]
    assert problems({k: v for k, v in TEACHER.items() if k != "stage"})[0].startswith("stage: missing")
    assert isinstance(parse_spec({k: v for k, v in TEACHER.items() if k != "stage"}, "teacher"), TeacherSpec)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: teacher\nname: t\nmodel: {preset: tiny\ntrain: 3\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems[0].startswith("YAML syntax error at line 4")


def test_duplicate_yaml_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("stage: teacher\nname: t\nmargin: 1.0\nmargin: 2.0\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "duplicate key 'margin' (first on line 3)" in info.value.problems[0]
    assert "line 4" in info.value.problems[0]


@pytest.mark.parametrize("stage", STAGES)
def test_json_schema_is_published_for_every_stage(stage):
    schema = spec_schema(stage)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
