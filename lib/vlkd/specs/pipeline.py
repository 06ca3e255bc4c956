"""A pipeline chains the stages: data -> teacher -> students -> eval, each consuming what the last published.

Inputs a stage block leaves out are wired to the outputs of the blocks before it (`features/<preprocess
name>`, ...), so a pipeline spec states each fact once. The refs name aliases (`:latest`); the pipeline
runner pins them to versions when it submits each stage, and that pinned lineage is what gets recorded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vlkd.specs.base import ArtifactName, KubernetesSpec, Resources, StorageConfig, StrictModel
from vlkd.specs.data import PreprocessSpec, TextSpec
from vlkd.specs.distill import DistillSpec
from vlkd.specs.evaluate import EvalSpec
from vlkd.specs.teacher import TeacherSpec

# Fields of each block that `PipelineSpec._wire` fills when they are left out.
_WIRED = {
    "PreprocessSpec": {"name"},
    "TextSpec": {"name"},
    "TeacherSpec": {"name", "features", "tokenizer"},
    "DistillSpec": {"teacher", "corpus"},
    "EvalSpec": {"name"},
    "RetrievalSpec": {"teacher"},
}


class PipelineSpec(StrictModel):
    stage: Literal["pipeline"] = "pipeline"
    name: ArtifactName
    description: str = ""
    storage: StorageConfig | None = None
    preprocess: PreprocessSpec
    text: TextSpec
    teacher: TeacherSpec
    students: list[DistillSpec] = Field(min_length=1, description="e.g. NST+CRD and the text-only baseline")
    eval: EvalSpec | None = None
    resources: Resources = Field(
        default_factory=lambda: Resources(num_workers=0, cpus_per_worker=0.25),
        description="the pipeline job's driver (`vlkd pipeline submit`), which submits the stages and waits: each "
        "stage asks for its own resources",
    )
    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec, description="the pipeline job's RayJob (`vlkd pipeline submit --backend k8s`)"
    )

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        common = {"name": data.get("name"), "storage": data.get("storage")}

        def block(key: str, stage: str, defaults: dict[str, Any]) -> dict[str, Any] | None:
            value = data.get(key)
            if not isinstance(value, dict):
                return None
            value = {"stage": stage, **{k: v for k, v in common.items() if v is not None}, **value}
            value.update({k: v for k, v in defaults.items() if k not in value})
            data[key] = value
            return value

        pre = block("preprocess", "preprocess", {}) or {}
        text = block("text", "text", {}) or {}
        teacher = (
            block(
                "teacher",
                "teacher",
                {"features": f"features/{pre.get('name')}", "tokenizer": f"tokenizer/{text.get('name')}"},
            )
            or {}
        )
        students = data.get("students")
        if isinstance(students, list):
            data["students"] = [_wire_student(s, common, teacher, text) for s in students]
            rows = [s.get("name") for s in data["students"] if isinstance(s, dict)]
            if len(set(rows)) != len(rows):
                # checked before validation: duplicate names would also surface as confusing eval errors
                raise ValueError(f"students: each student needs its own name; got {rows}")
            baseline = next(
                (s.get("name") for s in data["students"] if isinstance(s, dict) and s.get("kd") == {}), None
            )
            teacher_ref = f"teacher/{teacher.get('name')}"
            evaluation = block(
                "eval", "eval", {"models": [f"student/{r}" for r in rows], "baseline": baseline, "retrieval": {}}
            )
            if evaluation is not None and isinstance(evaluation.get("retrieval"), dict):
                evaluation["retrieval"] = {"teacher": teacher_ref, **evaluation["retrieval"]}
        return data

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Inside a pipeline, the fields the wiring fills are optional."""
        schema = super().model_json_schema(*args, **kwargs)
        for name, fields in _WIRED.items():
            block = schema["$defs"][name]
            block["required"] = [f for f in block.get("required", []) if f not in fields]
        return schema

    def stages(self) -> list[tuple[str, Any]]:
        """The stage specs in the order they run, each with a key that names it in the DAG."""
        ordered: list[tuple[str, Any]] = [
            ("preprocess", self.preprocess),
            ("text", self.text),
            ("teacher", self.teacher),
        ]
        ordered += [(f"distill:{s.name}", s) for s in self.students]
        if self.eval is not None:
            ordered.append(("eval", self.eval))
        return ordered


def _wire_student(student: Any, common: dict[str, Any], teacher: dict[str, Any], text: dict[str, Any]) -> Any:
    if not isinstance(student, dict):
        return student
    wired = {"stage": "distill", **({"storage": common["storage"]} if common["storage"] else {}), **student}
    wired.setdefault("corpus", f"corpus/{text.get('name')}")
    if wired.get("kd", True) != {}:  # the text-only baseline (kd: {}) needs no teacher
        wired.setdefault("teacher", f"teacher/{teacher.get('name')}")
    return wired
