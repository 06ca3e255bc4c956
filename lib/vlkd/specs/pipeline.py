"""A pipeline chains the stages: data -> teacher -> students -> eval, each consuming what the last published.

Inputs a stage block leaves out are wired to the outputs of the blocks before it (`features/<preprocess
name>`, ...), so a pipeline spec states each fact once. The refs name aliases (`:latest`); the pipeline
runner pins them to versions when it submits each stage, and that pinned lineage is what gets recorded.

`ablations:` declares the paper's ablation tables (Tables 2-7 and the appendix's; `vlkd.specs.ablations`): each cell
a variant of the distilled student (and of the teacher), added to the stages and to the eval's rows; a table that
lists its rows adds the teachers' language models and random inits it shows to the eval's rows. `corpora:` are
further text stages (Table 2's HowTo100M captions), tokenised with the pipeline text's tokenizer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from vlkd.ablation_table import AblationTable, TableCell
from vlkd.refs import ArtifactRef
from vlkd.specs.ablations import AblationSpec, Cell, Loc, error_at, expand
from vlkd.specs.base import ArtifactName, KubernetesSpec, Resources, StorageConfig, StrictModel
from vlkd.specs.data import PreprocessSpec, TextSpec
from vlkd.specs.distill import DistillSpec
from vlkd.specs.evaluate import EvalSpec, unknown_task
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
_TABLES = TypeAdapter(dict[str, AblationSpec])


class PipelineSpec(StrictModel):
    stage: Literal["pipeline"] = "pipeline"
    name: ArtifactName
    description: str = ""
    storage: StorageConfig | None = None
    preprocess: PreprocessSpec
    text: TextSpec
    corpora: list[TextSpec] = Field(
        default_factory=list,
        description="more text stages for students to name as their corpus (`corpus: corpus/NAME`), each tokenised "
        "with the text block's tokenizer unless it says otherwise: e.g. Table 2's HowTo100M captions",
    )
    teacher: TeacherSpec
    students: list[DistillSpec] = Field(
        min_length=1,
        description="e.g. NST+CRD and the text-only baseline; with ablations, the one distilled student is the "
        "template of the cells (it runs as its cells)",
    )
    ablations: dict[str, AblationSpec] = Field(
        default_factory=dict,
        description="the paper's ablation tables (Tables 3, 5, 6): table name -> axes over fields of the teacher and "
        "of the distilled student; every combination is a cell, distilled and evaluated",
    )
    eval: EvalSpec | None = None
    parallelism: int | None = Field(
        None,
        ge=1,
        description="how many stage jobs run at once: a stage starts once the stages whose outputs it reads have "
        "published, so preprocess and text can run together, and so can the teachers, and the students. Unset: as "
        "many as that allows on the k8s backend when every stage job waits its turn there without failing (each a "
        "RayJob with a cluster of its own, queued through Kueue, whose start deadline counts from admission, or "
        "with no start deadline); one at a time otherwise, and on the local and ray backends (and in the pipeline "
        "job), whose stage jobs share one machine or one Ray cluster that nothing shares out between them. A "
        "pipeline job's cluster has workers for the stages that may run at once together",
    )
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
        if isinstance(data.get("corpora"), list):
            data["corpora"] = [_wire_corpus(c, common, text) for c in data["corpora"]]
        teacher = (
            block(
                "teacher",
                "teacher",
                {"features": f"features/{pre.get('name')}", "tokenizer": f"tokenizer/{text.get('name')}"},
            )
            or {}
        )
        students = data.get("students")
        if not isinstance(students, list):
            return data
        data["students"] = [_wire_student(s, common, teacher, text) for s in students]
        # each name once: a name given twice is `_students_named_apart`'s error, not the eval's rows'
        rows = list(dict.fromkeys(s.get("name") for s in data["students"] if isinstance(s, dict)))
        template, cells, tables = _declared_cells(data, set(rows))
        baseline = next((s.get("name") for s in data["students"] if isinstance(s, dict) and s.get("kd") == {}), None)
        models = [f"student/{r}" for r in rows if r != template]
        models += [{"ref": f"student/{c.student.name}", "label": c.row} for c in _by_student(cells)]
        models += _listed_models(tables, {r for r in rows if r != template}, teacher.get("name"), cells)
        evaluation = block("eval", "eval", {"models": models, "baseline": baseline, "retrieval": {}})
        if evaluation is not None and isinstance(evaluation.get("retrieval"), dict):
            evaluation["retrieval"] = {"teacher": f"teacher/{teacher.get('name')}", **evaluation["retrieval"]}
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _students_named_apart(cls, data: Any, handler: ModelWrapValidatorHandler[PipelineSpec]) -> PipelineSpec:
        """Students sharing a name would publish one artifact: an error reported with the spec's others, not instead
        of them."""
        students = data.get("students") if isinstance(data, dict) else None
        names = [s.get("name") for s in students if isinstance(s, dict)] if isinstance(students, list) else []
        if len(set(names)) == len(names):
            return handler(data)
        message = f"each student needs its own name; got {names}"
        shared = PydanticCustomError("students", "{message}", {"message": message})
        errors = [InitErrorDetails(type=shared, loc=("students",), input=students)]
        try:
            handler(data)
        except ValidationError as exc:
            errors = [*map(_again, exc.errors()), *errors]
        raise ValidationError.from_exception_data(cls.__name__, errors)

    @model_validator(mode="after")
    def _corpora_named_apart(self) -> PipelineSpec:
        names = [self.text.name, *(c.name for c in self.corpora)]
        for i, corpus in enumerate(self.corpora):
            if corpus.name in names[: i + 1]:
                raise error_at(("corpora", i, "name"), f"{corpus.name!r} names another text stage: give it its own")
        return self

    @model_validator(mode="after")
    def _eval_tables(self) -> PipelineSpec:
        """The eval lays out each ablation table in a section of its report (unless its block lists tables)."""
        if self.eval is None or not self.ablations or "tables" in self.eval.model_fields_set:
            return self
        tasks = [task.name for task in self.eval.tasks]
        for key, table in self.ablations.items():
            if problem := unknown_task(table.tasks, tasks):  # said at the table's path, not the generated eval's
                j, message = problem
                raise error_at(("ablations", key, "tasks", j), message)
        tables = self.ablation_tables()
        rows = {m.row for m in self.eval.models}
        if missing := list(dict.fromkeys(c.label for t in tables for c in t.cells if c.row not in rows)):
            raise error_at(
                ("eval", "models"),
                f"the ablation cells {', '.join(missing)} are not evaluated: leave models out (the pipeline lists "
                "the students and every cell's), or list their students",
            )
        data = [
            {
                "name": t.name,
                "title": t.title,
                "rows": [{"row": row, "label": label} for row, label in t.rows()],
                "tasks": list(t.tasks) if t.tasks else None,
            }
            for t in tables
        ]
        self.eval = EvalSpec.model_validate({**self.eval.model_dump(mode="json"), "tables": data})
        return self

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Inside a pipeline, the fields the wiring fills are optional."""
        schema = super().model_json_schema(*args, **kwargs)
        for name, fields in _WIRED.items():
            block = schema["$defs"][name]
            block["required"] = [f for f in block.get("required", []) if f not in fields]
        return schema

    def cells(self) -> list[Cell]:
        """The ablation tables' cells, table by table (a student shared by cells appears once per cell)."""
        if not any(table.axes for table in self.ablations.values()):
            return []
        return expand(self.teacher, _template(self.students), self.ablations, _with_voken_bank)

    def stages(self) -> list[tuple[str, Any]]:
        """The stage specs in the order they run, each with a key that names it in the DAG: the data, the teacher
        and the ablations' teachers, the students and the ablations' students, each once, then the eval."""
        cells = self.cells()
        template = _template(self.students).name if cells else None
        ordered: list[tuple[str, Any]] = [("preprocess", self.preprocess), ("text", self.text)]
        ordered += [(f"text:{corpus.name}", corpus) for corpus in self.corpora]
        made = [self.teacher, *(c.teacher for c in cells)]
        made += [s for s in self.students if s.name != template] + [c.student for c in _by_student(cells)]
        ordered += list({self.stage_key(spec): spec for spec in made}.items())
        if self.eval is not None:
            ordered.append(("eval", self.eval))
        return ordered

    def parallelism_on(self, backend: str) -> int:
        """How many stage jobs run at once on `backend` (see `parallelism`)."""
        if self.parallelism is not None:
            return self.parallelism
        stages = [spec for _, spec in self.stages()]
        # Unqueued, a RayJob that waits for nodes longer than its start deadline fails.
        wait = all(s.kubernetes.queue or s.kubernetes.start_deadline_seconds is None for s in stages)
        return len(stages) if backend == "k8s" and wait else 1

    def stage_key(self, spec: TeacherSpec | DistillSpec) -> str:
        """`teacher` for the pipeline's teacher, `teacher:NAME` for an ablation's, `distill:NAME` for a student."""
        return self._key("student" if isinstance(spec, DistillSpec) else "teacher", spec.name)

    def _key(self, kind: str, name: str) -> str:
        if kind == "student":
            return f"distill:{name}"
        return "teacher" if name == self.teacher.name else f"teacher:{name}"

    def ablation_tables(self) -> list[AblationTable]:
        """Each ablation table as the pipeline's progress and the report show it: its cells' labels, eval rows and
        stages, and the baseline row it starts with."""
        rows = {(m.ref.kind, m.ref.name, m.init): m.row for m in self.eval.models} if self.eval else {}
        baseline = self.eval.baseline if self.eval else None
        shape = next((s.model for s in self.students if s.name == baseline), None)
        cells = self.cells()
        tables = []
        for key, table in self.ablations.items():
            made = tuple(
                TableCell(
                    c.label,
                    rows.get(("student", c.student.name, "pretrained"), c.row),
                    c.values,
                    (self.stage_key(c.teacher), self.stage_key(c.student)),
                )
                for c in cells
                if c.table == key
            )
            listed = tuple(
                TableCell(row.label, rows.get(row.model, row.label), {}, (self._key(*row.model[:2]),))
                for row in table.rows
            )
            tables.append(
                AblationTable(
                    key,
                    table.title or key,
                    tuple(f"{block}.{field}" for block, field, _ in table.axes),
                    baseline,
                    made + listed,
                    f"BERT{shape.num_layers}L/{shape.hidden_size}H" if shape else None,
                    tuple(table.tasks) if table.tasks else None,
                )
            )
        return tables


def _again(error: ErrorDetails) -> InitErrorDetails:
    """A validation error to raise again beside another: its type, message, path and input as they were."""
    details = PydanticCustomError(error["type"], "{message}", {"message": error["msg"]})
    return InitErrorDetails(type=details, loc=error["loc"], input=error["input"])


def _wire_corpus(corpus: Any, common: dict[str, Any], text: dict[str, Any]) -> Any:
    """A further text stage: tokenised with the pipeline text's tokenizer, so its students read the teacher's ids."""
    if not isinstance(corpus, dict):
        return corpus
    wired = {"stage": "text", **({"storage": common["storage"]} if common["storage"] else {}), **corpus}
    wired.setdefault("tokenizer", {"artifact": f"tokenizer/{text.get('name')}"})
    return wired


def _wire_student(student: Any, common: dict[str, Any], teacher: dict[str, Any], text: dict[str, Any]) -> Any:
    if not isinstance(student, dict):
        return student
    wired = {"stage": "distill", **({"storage": common["storage"]} if common["storage"] else {}), **student}
    wired.setdefault("corpus", f"corpus/{text.get('name')}")
    if wired.get("kd", True) != {}:  # the text-only baseline (kd: {}) needs no teacher
        wired.setdefault("teacher", f"teacher/{teacher.get('name')}")
    return _voken_bank_of(wired, teacher.get("features"))


def _voken_bank_of(student: dict[str, Any], features: Any) -> dict[str, Any]:
    """The voken objective's video bank defaults to the teacher's own features (Sec. 3.4: the videos it saw)."""
    kd, options = student.get("kd"), student.get("kd_options") or {}
    if not (isinstance(kd, dict) and "voken" in kd and isinstance(options, dict)):
        return student
    voken = options.get("voken") or {}
    if not isinstance(voken, dict) or voken.get("features") is not None:
        return student
    return {**student, "kd_options": {**options, "voken": {**voken, "features": features}}}


def _with_voken_bank(student: dict[str, Any], teacher: TeacherSpec) -> dict[str, Any]:
    return _voken_bank_of(student, str(teacher.features))


def _template(students: list[DistillSpec]) -> DistillSpec:
    """The one distilled student, which the ablation cells vary."""
    distilled = [s for s in students if s.kd]
    if len(distilled) != 1:
        found = ", ".join(s.name for s in distilled) or "none"
        raise error_at(
            ("students",),
            f"ablations vary the one distilled student (the others are text-only baselines, kd: {{}}); found {found}",
        )
    return distilled[0]


def _declared_cells(data: dict[str, Any], students: set[str]) -> tuple[str | None, list[Cell], dict[str, AblationSpec]]:
    """(the template student's name, the cells, the tables) of a pipeline's data being wired; none while a part
    they depend on is invalid: that part's own validation says what is wrong with it."""
    if not data.get("ablations"):
        return None, [], {}
    try:
        teacher = TeacherSpec.model_validate(data.get("teacher"))
        validated = [DistillSpec.model_validate(s) for s in data["students"]]
        tables = _TABLES.validate_python(data["ablations"])
    except ValidationError:
        return None, [], {}
    if not any(table.axes for table in tables.values()):
        return None, [], tables  # every table lists its rows: no template
    template = _template(validated)
    if template.teacher != ArtifactRef.parse(f"teacher/{teacher.name}"):
        raise error_at(
            ("students", validated.index(template), "teacher"),
            f"the ablation cells distil from the pipeline's teacher (teacher/{teacher.name}) or a cell's variant of "
            "it: remove this teacher",
        )
    cells = expand(teacher, template, tables, _with_voken_bank)
    for cell in cells:
        if cell.student.name in students - {template.name}:
            raise error_at(
                ("ablations", cell.table), f"cell {cell.label} is named {cell.student.name!r}, as a student listed"
            )
    return template.name, cells, tables


def _listed_models(
    tables: dict[str, AblationSpec], students: set[str], teacher: str | None, cells: list[Cell]
) -> list[dict[str, Any]]:
    """The eval models that tables listing their rows show beyond the students (a teacher's language model, a
    random init), each once; a row naming no student or teacher of the pipeline is an error at its path."""
    known = {
        "student": students | {c.student.name for c in cells},
        "teacher": {teacher} | {c.teacher.name for c in cells},
    }
    models: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, table in tables.items():
        for i, row in enumerate(table.rows):
            kind, name, init = row.model
            if name not in known[kind]:
                where: Loc = ("ablations", key, "rows", i, kind)
                names = ", ".join(sorted(n for n in known[kind] if n)) or "none"
                raise error_at(where, f"{name!r} is no {kind} of the pipeline or its cells; {kind}s: {names}")
            if kind == "teacher" and init == "pretrained":
                models.setdefault(row.model, {"ref": f"{kind}/{name}", "label": f"{name} (teacher LM)"})
            elif init == "random":
                models.setdefault(row.model, {"ref": f"{kind}/{name}", "init": init})
    return list(models.values())


def _by_student(cells: list[Cell]) -> list[Cell]:
    """The first cell of each student (cells in several tables share one)."""
    first: dict[str, Cell] = {}
    for cell in cells:
        first.setdefault(cell.student.name, cell)
    return list(first.values())
