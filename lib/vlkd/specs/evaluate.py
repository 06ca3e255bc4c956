"""Spec of the eval stage: downstream finetuning, teacher retrieval and the comparison report."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, GetJsonSchemaHandler, field_validator, model_validator

from vlkd.specs.base import DataSource, FeaturesRef, ModelRef, Seed, StageSpec, StrictModel, TeacherRef
from vlkd.specs.training import BatchSize, Steps

TaskName = Literal["sst2", "qnli", "qqp", "mnli", "squad_v1", "squad_v2", "swag", "piqa", "tracie", "glue_diagnostic"]
ReferenceName = Literal["majority", "bag_of_words", "no_answer"]


class FinetuneSpec(StrictModel):
    """Downstream hyperparameters; the paper uses 3 epochs, lr 1e-4, batch 32 for all tasks (Sec. 4.3)."""

    epochs: Steps = 3
    max_steps: Steps | None = Field(
        None, description="stop after this many optimizer steps (the schedule decays over them); default: none"
    )
    lr: float = Field(1e-4, gt=0)
    batch_size: BatchSize = 32
    max_len: int = Field(128, gt=2)
    weight_decay: float = Field(0.01, ge=0, description="the authors' finetuning scripts use 0.0")
    eps: float = Field(1e-8, gt=0, description="AdamW's epsilon (the authors' finetuning scripts use 1e-6)")
    warmup_fraction: float = Field(0.1, ge=0, lt=1)


class TaskSpec(StrictModel):
    """One downstream task; `finetune` holds only this task's overrides of `EvalSpec.finetune`."""

    name: TaskName
    data: DataSource = Field(
        description="the task's files in their official format: a dataset artifact, or an s3:// or file:// folder"
    )
    finetune: FinetuneSpec = FinetuneSpec()


class EvalModel(StrictModel):
    """A model to evaluate; a bare ref is short for `{ref: REF}`."""

    ref: ModelRef
    label: str | None = Field(
        None, description="row name in the report; default: the artifact name (`NAME (random init)` for a random init)"
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="random: finetune the model's architecture and tokenizer from a random init, a new one per seed "
        "(Table 2's no-pretraining baseline)",
    )

    @property
    def row(self) -> str:
        if self.label:
            return self.label
        return self.ref.name if self.init == "pretrained" else f"{self.ref.name} (random init)"

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        model = handler.resolve_ref_schema(handler(schema))
        return {"anyOf": [model["properties"]["ref"], model]}


class TableRow(StrictModel):
    """A row of an ablation table; a bare row name is short for `{row: ROW}`."""

    row: str = Field(description="a model row of the eval (its label, or its artifact's name)")
    label: str | None = Field(None, description="its name in this table; default: the row's")

    @property
    def shown(self) -> str:
        return self.label or self.row

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        model = handler.resolve_ref_schema(handler(schema))
        return {"anyOf": [model["properties"]["row"], model]}


class EvalTable(StrictModel):
    """An ablation table of the report (Sec. 5.2, Tables 3, 5, 6): some of the eval's rows under their names in the
    table, in a section of its own after the main table; a pipeline's `ablations:` write one per table."""

    name: str
    title: str = Field("", description="the section's heading; default: the name")
    rows: list[TableRow] = Field(
        min_length=1, description="in the table's order; list the baseline row to show each row's difference from it"
    )
    tasks: list[TaskName] | None = Field(
        None,
        description="the tasks whose columns the section shows (Table 7: glue_diagnostic, piqa, tracie); default: all",
    )


class RetrievalSpec(StrictModel):
    """Text-to-video retrieval of a teacher on held-out clips (R@1/5/10, median rank) and example pages."""

    teacher: TeacherRef
    features: FeaturesRef | None = Field(None, description="default: the teacher's own features, held out")
    num_examples: int = Field(8, ge=0, description="example queries on the visualisation page")
    top_k: int = Field(5, gt=0)


class EvalSpec(StageSpec):
    stage: Literal["eval"] = "eval"
    outputs: ClassVar[tuple[str, ...]] = ("eval",)

    models: list[EvalModel] = Field(default_factory=list, description="student/teacher refs to finetune")
    baseline: str | None = Field(None, description="the row others are compared with (a model's label)")
    tasks: list[TaskSpec] = Field(default_factory=list)
    finetune: FinetuneSpec = FinetuneSpec()
    seeds: list[Seed] = Field([0, 1, 2], min_length=1, description="finetuning seeds, averaged")
    references: list[ReferenceName] = Field(
        ["majority", "bag_of_words", "no_answer"],
        description="reference rows per task, never averaged: the training split's majority class, a "
        "bag-of-words logistic regression (sentence-pair classification only; minutes of the job's CPU on MNLI or "
        "QQP before finetuning starts: leave it out to save them), and always answering no answer (SQuAD v2.0)",
    )
    retrieval: RetrievalSpec | None = None
    tables: list[EvalTable] = Field(
        default_factory=list, description="ablation tables (Tables 3, 5, 6), each a section of the report"
    )

    @property
    def driver_cpus(self) -> float:
        """None: every finetuning run is a Ray task of a worker's shape, and the driver only waits for them."""
        return 0.0

    @field_validator("seeds")
    @classmethod
    def _each_seed_once(cls, seeds: list[int]) -> list[int]:
        """A seed listed twice is one run counted twice: in mean ± std, and in the intervals as if it were two."""
        for i, seed in enumerate(seeds):
            if seed in seeds[:i]:
                raise ValueError(f"seed {seed} is listed twice; list each finetuning seed once")
        return seeds

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        """Models may be bare refs; each task's finetune block overrides the global one field by field."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("models"), list):
            data["models"] = [{"ref": m} if isinstance(m, str) else m for m in data["models"]]
        if isinstance(data.get("tables"), list):
            data["tables"] = [_bare_rows(t) for t in data["tables"]]
        common = data.get("finetune") or {}
        if isinstance(data.get("tasks"), list) and isinstance(common, dict):
            data["tasks"] = [
                {**t, "finetune": {**common, **(t.get("finetune") or {})}} if isinstance(t, dict) else t
                for t in data["tasks"]
            ]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EvalSpec:
        rows = [m.row for m in self.models]
        if len(set(rows)) != len(rows):
            raise ValueError(f"models: two rows share a label ({rows}); set distinct labels")
        if self.baseline is not None and self.baseline not in rows:
            raise ValueError(f"baseline: {self.baseline!r} is not a model row; rows: {', '.join(rows) or 'none'}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: a task is listed twice ({names})")
        if "glue_diagnostic" in names and "mnli" not in names:
            raise ValueError("tasks: glue_diagnostic scores the MNLI-finetuned model; add the mnli task")
        if self.tasks and not self.models:
            raise ValueError("models: list the student or teacher refs to finetune on the tasks")
        if not self.tasks and self.retrieval is None:
            raise ValueError("nothing to evaluate: give tasks (with models) or retrieval")
        _check_tables(self.tables, rows, names)
        return self


def _bare_rows(table: Any) -> Any:
    if not (isinstance(table, dict) and isinstance(table.get("rows"), list)):
        return table
    return {**table, "rows": [{"row": r} if isinstance(r, str) else r for r in table["rows"]]}


def unknown_task(shown: list[str] | None, tasks: list[str]) -> tuple[int, str] | None:
    """(its index, what is wrong) of the first task a table would show that the eval does not run, if any."""
    for j, task in enumerate(shown or []):
        if task not in tasks:
            return j, f"{task!r} is not a task of the eval; tasks: {', '.join(tasks)}"
    return None


def _check_tables(tables: list[EvalTable], rows: list[str], tasks: list[str]) -> None:
    """Each table has a name of its own, its rows are model rows, each once under a label of its own, and the
    tasks it shows are the eval's."""
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"tables: two tables share a name ({names})")
    for i, table in enumerate(tables):
        if problem := unknown_task(table.tasks, tasks):
            j, message = problem
            raise ValueError(f"tables[{i}].tasks[{j}]: {message}")
        for j, row in enumerate(table.rows):
            where = f"tables[{i}].rows[{j}]"
            if row.row not in rows:
                raise ValueError(f"{where}: {row.row!r} is not a model row; rows: {', '.join(rows) or 'none'}")
            if row.row in [r.row for r in table.rows[:j]]:
                raise ValueError(f"{where}: {row.row!r} is listed twice")
            if row.shown in [r.shown for r in table.rows[:j]]:
                raise ValueError(f"{where}: another row of the table is labelled {row.shown!r}; set distinct labels")
