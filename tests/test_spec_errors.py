"""`vlkd validate` never surprises: a number past any real run, a seed listed twice or a file that is no YAML text is
refused at validation, and every error of a spec is reported, each once, under the path its user wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlkd.errors import SpecError
from vlkd.specs import load_spec, parse_spec

EXAMPLES = Path(__file__).parent.parent / "examples"
TEACHER = {"stage": "teacher", "name": "t", "features": "features/f:v1", "tokenizer": "tokenizer/w"}
EVAL = {"stage": "eval", "name": "e", "models": ["student/a"], "tasks": [{"name": "sst2", "data": "s3://bkt/sst2"}]}


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


def pipeline() -> dict:
    return yaml.safe_load((EXAMPLES / "tiny" / "pipeline.yaml").read_text())


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_steps", 10**23), ("max_steps", 1.0e23), ("batch_size", 99999999999999999999)],
    ids=["max_steps-int", "max_steps-float", "batch_size"],
)
def test_a_training_run_longer_or_a_batch_larger_than_any_real_one_is_refused(field, value):
    (problem,) = problems({**TEACHER, "train": {field: value}})
    assert problem.startswith(f"train.{field}: ") and "more than any run needs: at most" in problem, problem


@pytest.mark.parametrize("field", ["max_steps", "batch_size", "epochs"])
def test_a_finetuning_run_past_any_real_one_is_refused(field):
    (problem,) = problems({**EVAL, "finetune": {field: 10**23}})
    assert problem.startswith(f"finetune.{field}: ") and "more than any run needs: at most" in problem, problem


def test_a_float_written_for_a_count_in_a_yaml_file_is_refused(tmp_path):
    """YAML reads `1e23` as text and `1.0e+23` as a float: neither becomes a count of steps."""
    for written in ("1e23", "1.0e+23"):
        path = tmp_path / "teacher.yaml"
        path.write_text(yaml.safe_dump(TEACHER) + f"train: {{max_steps: {written}}}\n")
        with pytest.raises(SpecError) as info:
            load_spec(path)
        (problem,) = info.value.problems
        assert problem.startswith("train.max_steps: "), problem


def test_a_learning_rate_of_infinity_is_refused():
    (problem,) = problems({**TEACHER, "optim": {"lr": float("inf")}})
    assert problem.startswith("optim.lr: "), problem


def test_a_seed_listed_twice_is_refused():
    """A repeated seed is the same run twice: it would count twice in mean ± std and in the intervals."""
    assert problems({**EVAL, "seeds": [0, 1, 0]}) == ["seeds: seed 0 is listed twice; list each finetuning seed once"]


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_a_seed_no_generator_takes_is_refused(seed):
    """numpy's generators refuse a negative seed, torch's one past 64 bits: the job would crash as it starts."""
    (problem,) = problems({**TEACHER, "seed": seed})
    assert problem.startswith("seed: Input should be"), problem
    (problem,) = problems({**EVAL, "seeds": [0, seed]})
    assert problem.startswith("seeds[1]: Input should be"), problem


def test_an_error_of_the_evals_finetune_block_is_reported_once_under_its_own_path():
    raw = pipeline()
    raw["eval"]["finetune"]["epochs"] = 0
    assert problems(raw) == ["eval.finetune.epochs: Input should be greater than 0"]
    alone = {**EVAL, "tasks": [*EVAL["tasks"], {"name": "qnli", "data": "s3://bkt/qnli"}], "finetune": {"epochs": 0}}
    assert problems(alone) == ["finetune.epochs: Input should be greater than 0"]


def test_a_tasks_own_override_is_reported_where_it_was_written():
    spec = {**EVAL, "tasks": [{**EVAL["tasks"][0], "finetune": {"epochs": 0}}], "finetune": {"epochs": 0}}
    assert problems(spec) == [
        "tasks[0].finetune.epochs: Input should be greater than 0",
        "finetune.epochs: Input should be greater than 0",
    ]


def test_a_pipelines_storage_and_name_errors_are_reported_once_not_once_per_stage():
    raw = pipeline()
    assert problems({**raw, "storage": {"root": "http://x"}}) == [
        "storage: storage.root 'http://x': use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH"
    ]
    (problem,) = problems({**raw, "name": "bad name!"})
    assert problem.startswith("name: invalid artifact name 'bad name!'"), problem


def test_students_sharing_a_name_are_reported_with_every_other_error():
    raw = pipeline()
    raw["students"][1]["name"] = raw["students"][0]["name"]
    raw["students"][0]["kd"]["crdd"] = 1.0
    raw["eval"]["finetune"]["epochs"] = 0
    found = problems(raw)
    assert [p.split(":")[0] for p in found] == ["students[0].kd.crdd", "eval.finetune.epochs", "students"], found
    assert found[2] == "students: each student needs its own name; got ['tiny-nst-crd', 'tiny-nst-crd']"


def test_a_binary_file_is_a_one_line_spec_error(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert "not a YAML text file" in problem and "\n" not in problem, problem


def test_validate_of_a_binary_file_prints_one_line_and_no_traceback(tmp_path):
    for name, content in [("random.yaml", bytes(range(256)) * 4), ("nul.yaml", b"\x00\x01\x02stage: teacher\n")]:
        path = tmp_path / name
        path.write_bytes(content)
        result = subprocess.run(
            [sys.executable, "-m", "vlkd.cli.main", "validate", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        shown = (result.stdout + result.stderr).strip().splitlines()
        assert len(shown) == 1 and "not a YAML text file" in shown[0], shown
