"""The paper's ablation tables from one pipeline spec (Sec. 5.2-5.3: Tables 2-7, and the appendix's).

A table varies fields of the pipeline's teacher (`teacher: {FIELD: [values]}`) and of its distilled student, the
template of the cells (`student: {FIELD: [values]}`); every combination of values is a cell, a student distilled
and evaluated like any other, from the pipeline's teacher or, when the cell changes a teacher field, from a
teacher of its own (Tables 3, 5, 6, the appendix's distillation head). A table that compares models no single
field tells apart (Table 2: no pretraining, text corpora; Table 4: text, video and two-stage pretraining; Table 7)
lists its rows instead (`rows: [{label, student | teacher}]`): students of the pipeline or of its cells, a
teacher's language model, or a student's architecture from a random init.

A cell is named for what it is, so that equal specs get equal names and run once (the pipeline's skip rule does the
rest), whichever tables they appear in: a teacher is the pipeline teacher's name plus the values that differ from
it (`howto100m-6l-mlm`); a student is the template's name plus its teacher's suffix plus its `kd` where the spec
varies `kd` (`wiki103-6l-mlm-kd-nst`: a student is named for what it distils) and each other student field the
spec varies where it differs from the template (`wiki103-6l-kd-nst-distill_head-false`). The template itself runs
only as its cells.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from vlkd.specs.base import StrictModel
from vlkd.specs.distill import DistillSpec
from vlkd.specs.evaluate import TaskName
from vlkd.specs.teacher import TeacherSpec

BLOCKS: dict[str, type[BaseModel]] = {"teacher": TeacherSpec, "student": DistillSpec}
# What a cell may not set: its name says its values, and a student's teacher is its cell's teacher.
_FIXED = {
    ("teacher", "name"): "a cell is named for its values",
    ("student", "name"): "a cell is named for its values",
    ("student", "teacher"): "a cell distils from its own teacher: vary the teacher's fields under `teacher:`",
    ("teacher", "stage"): "not a field to vary",
    ("student", "stage"): "not a field to vary",
}
# How values read in a row label: the paper's words (Tables 3, 5, 6). Its voken row reads "Vid Voken" where the
# table does not vary the teacher's input (Table 5), "Voken (Video)" where it does (Table 6).
_WORDS = {
    "soft_label": "Soft label",
    "regression": "Regression",
    "nst": "NST",
    "nst_poly": "NST-poly",
    "crd": "CRD",
    "crd_nt_xent": "NT-Xent",
    "voken": "Voken",
    "ct": "CT",
    "mlm": "MLM",
    "video": "Video",
    "middle_frame": "Image",
}
_VIDEO_VOKEN = "Vid Voken"
_OBJECTIVE_ORDER = ("mlm", "ct")
"""the paper writes T^{MLM+CT}, whatever order the spec lists the objectives in"""
_HEAD = {True: " (distillation head)", False: " (no distillation head)"}
"""the appendix's distillation-head ablation"""
Values = Annotated[list[Any], Field(min_length=1)]
Wire = Callable[[dict[str, Any], TeacherSpec], dict[str, Any]]
"""(a student's spec data, its teacher) -> the data with the pipeline's wiring (e.g. the voken bank's features)"""
Loc = tuple[str | int, ...]


class AblationRow(StrictModel):
    """A row of a table that lists its models: a student of the pipeline (a cell's, by its name) or a teacher's
    language model, under the paper's label."""

    label: str = Field(min_length=1, description="the row's name in the table, e.g. Two-Stage PT")
    student: str | None = Field(None, description="a student of the pipeline's `students:`, or of a cell, by name")
    teacher: str | None = Field(None, description="a teacher of the pipeline (its own or a cell's), by name")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: the model's architecture from a random init (Table 2's No-Pretrain)"
    )

    @model_validator(mode="after")
    def _one_model(self) -> AblationRow:
        if (self.student is None) == (self.teacher is None):
            raise ValueError("give one model: student: NAME or teacher: NAME")
        return self

    @property
    def model(self) -> tuple[str, str, str]:
        """(kind, name, init): which eval model the row shows."""
        return ("student", self.student, self.init) if self.student else ("teacher", self.teacher, self.init)


class AblationSpec(StrictModel):
    """One table: axes over fields of the teacher and of the distilled student, a row per cell (every combination),
    the teacher's axes outermost, so the cells sharing a teacher form a block, as in Table 6; or the rows it lists.
    """

    title: str = Field("", description="the table's heading; default: its key")
    teacher: dict[str, Values] = Field(
        default_factory=dict, description="teacher field -> its values, e.g. objectives: [[mlm], [ct], [ct, mlm]]"
    )
    student: dict[str, Values] = Field(
        default_factory=dict, description="distilled student field -> its values, e.g. kd: [{nst: 1.0}, {crd: 1.0}]"
    )
    rows: list[AblationRow] = Field(
        default_factory=list,
        description="instead of axes: the models the table compares, in its order (Tables 2, 4, 7), e.g. "
        "{label: Video PT, teacher: howto100m-6l}",
    )
    tasks: list[TaskName] | None = Field(
        None, description="the tasks the table shows (Table 7: glue_diagnostic, piqa, tracie); default: the eval's"
    )

    @model_validator(mode="after")
    def _valid_axes(self) -> AblationSpec:
        if self.rows:
            errors = [_error(("rows",), "list rows or give axes, not both")] if self.axes else []
            labels = [row.label for row in self.rows]
            errors += [_error(("rows", i, "label"), "listed twice") for i, v in enumerate(labels) if v in labels[:i]]
            _raise(errors)
            return self
        errors = (
            [] if self.axes else [_error((), "give an axis (teacher: {FIELD: [values]} or student: {...}) or rows")]
        )
        for block, field, values in self.axes:
            errors += _axis_errors(block, field, values)
        _raise(errors)
        return self

    @property
    def axes(self) -> list[tuple[str, str, list[Any]]]:
        """(block, field, values), the teacher's first."""
        return [(block, f, v) for block in BLOCKS for f, v in getattr(self, block).items()]


def _axis_errors(block: str, field: str, values: list[Any]) -> list[InitErrorDetails]:
    fields = list(BLOCKS[block].model_fields)
    if (block, field) in _FIXED:
        return [_error((block, field), _FIXED[block, field])]
    if field not in fields:
        close = difflib.get_close_matches(field, fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid fields: {', '.join(fields)}"
        return [_error((block, field), f"unknown field of the {block}; {hint}")]
    errors = [_error((block, field, i), "listed twice") for i, v in enumerate(values) if v in values[:i]]
    if (block, field) == ("student", "kd"):
        errors += [
            _error((block, field, i), "a cell distils: the text-only baseline is a student of its own (kd: {})")
            for i, v in enumerate(values)
            if v == {}
        ]
    return errors


@dataclass(frozen=True)
class Cell:
    """One combination of a table's values, and the teacher and student that make it."""

    table: str
    values: dict[str, str]
    """axis (`teacher.visual_input`) -> the value in the paper's words (`Image`)"""
    label: str
    """its row in its table, which says the table's axes (`+ KD-NST (Image)`)"""
    row: str
    """its student's row wherever it is shown, which says every value that makes it (`+ KD-NST from T^{MLM}`)"""
    teacher: TeacherSpec
    student: DistillSpec


Pick = tuple[str, str, int, Any]
"""(block, field, index of the value on its axis, value)"""


def expand(teacher: TeacherSpec, student: DistillSpec, tables: Mapping[str, AblationSpec], wire: Wire) -> list[Cell]:
    """Every table's cells, in order (a table that lists its rows has none). Raises a ValidationError at the path
    (`ablations.NAME.student.kd[2]`) of each value that makes an invalid spec, and where two different cells would
    get one name."""
    normal = _normalized(teacher, student, tables, wire)
    student_axes = list(dict.fromkeys(field for table in tables.values() for field in table.student))
    cells, named, errors = [], {}, []
    for key, table in tables.items():
        if not table.axes:
            continue
        axes = [[(block, field, i, v) for i, v in enumerate(values)] for block, field, values in table.axes]
        for picks in itertools.product(*axes):
            changed = sorted(
                (p for p in picks if p[0] == "teacher" and normal[(key, *p[:3])] != getattr(teacher, p[1])),
                key=lambda p: p[1],
            )
            own = _said(key, picks, student, student_axes, normal)
            video = next((v for b, f, _, v in picks if (b, f) == ("teacher", "visual_input")), teacher.visual_input)
            varies_input = "visual_input" in table.teacher
            label = _row(
                [(field, value) for block, field, _, value in picks if block == "student"],
                [(field, value) for block, field, _, value in picks if block == "teacher"],
                video_voken=video == "video" and not varies_input,
            )
            row = _row(own, [(field, value) for _, field, _, value in changed], video_voken=video == "video")
            try:
                cell = _cell(key, picks, changed, own, label, row, teacher, student, wire)
            except ValidationError as exc:
                errors += [_error(("ablations", key), f"cell {label}: {_message(e)}") for e in exc.errors()]
                continue
            for made in (cell.teacher, cell.student):
                if named.setdefault((made.stage, made.name), made) != made:
                    errors.append(_error(("ablations", key), f"two different cells are named {made.name!r}"))
            cells.append(cell)
    _raise(errors)
    return cells


def _said(
    key: str, picks: tuple[Pick, ...], student: DistillSpec, student_axes: list[str], normal: dict[Any, Any]
) -> list[tuple[str, Any]]:
    """The student values a cell's name and eval row say: its `kd` always (a student is named for what it distils),
    each other student axis of the spec where the cell's value is not the template's."""
    said = []
    for field in student_axes:
        pick = next((p for p in picks if p[:2] == ("student", field)), None)
        if pick is None and field == "kd":
            said.append((field, student.model_dump(mode="json")[field]))
        elif pick is not None and (field == "kd" or normal[(key, *pick[:3])] != getattr(student, field)):
            said.append((field, pick[3]))
    return said


def _cell(
    key: str,
    picks: tuple[Pick, ...],
    changed: list[Pick],
    own: list[tuple[str, Any]],
    label: str,
    row: str,
    teacher: TeacherSpec,
    student: DistillSpec,
    wire: Wire,
) -> Cell:
    """The cell of these values; `changed`: the teacher's values that differ from the pipeline teacher's, by field
    name, and `own`: the student's values its name says (a name and a row say them in one order, whichever table
    the cell is in)."""
    chosen = {block: {field: value for b, field, _, value in picks if b == block} for block in BLOCKS}
    suffix = [_name_part(field, value) for _, field, _, value in changed]
    if changed:
        data = {**teacher.model_dump(mode="json"), **chosen["teacher"], "name": _joined(teacher.name, suffix)}
        teacher = TeacherSpec.model_validate(data)
    data = {
        **student.model_dump(mode="json"),
        **chosen["student"],
        "name": _joined(student.name, suffix + [_name_part(field, value) for field, value in own]),
        "teacher": f"teacher/{teacher.name}",
    }
    return Cell(
        key,
        {f"{block}.{field}": _words(value) for block, field, _, value in picks},
        label,
        row,
        teacher,
        DistillSpec.model_validate(wire(data, teacher)),
    )


def _normalized(
    teacher: TeacherSpec, student: DistillSpec, tables: Mapping[str, AblationSpec], wire: Wire
) -> dict[tuple[str, str, str, int], Any]:
    """(table, block, field, index) -> the value as its block's spec holds it once validated (what tells a cell's
    teacher from the pipeline's), each value checked alone against the template; errors at the value's path."""
    normal, errors = {}, []
    for key, table in tables.items():
        for block, field, values in table.axes:
            for i, value in enumerate(values):
                try:
                    normal[key, block, field, i] = getattr(_with(block, field, value, teacher, student, wire), field)
                except ValidationError as exc:
                    errors += [_at(("ablations", key, block, field, i), field, e) for e in exc.errors()]
    _raise(errors)
    return normal


def _with(block: str, field: str, value: Any, teacher: TeacherSpec, student: DistillSpec, wire: Wire) -> BaseModel:
    """The teacher or the template student with one field set to `value`."""
    if block == "teacher":
        return TeacherSpec.model_validate({**teacher.model_dump(mode="json"), field: value})
    return DistillSpec.model_validate(wire({**student.model_dump(mode="json"), field: value}, teacher))


def _row(student: list[tuple[str, Any]], teacher: list[tuple[str, Any]], video_voken: bool = False) -> str:
    """A row label, as the paper writes them: `+ KD-NST`, `+ KD from T^{MLM}`, `+ KD-Voken (Image)`; `video_voken`:
    the voken objective reads `Vid Voken` (Table 5, where the teacher's input is not an axis)."""
    parts = [_fragment("student", field, value, video_voken) for field, value in student]
    return "+ KD" + "".join(parts + [_fragment("teacher", field, value) for field, value in teacher])


def _fragment(block: str, field: str, value: Any, video_voken: bool = False) -> str:
    """How a value reads in a row label: `-NST`, ` from T^{MLM+CT}`, ` (Image)`, ` (no distillation head)`."""
    if (block, field) == ("student", "kd"):
        words = _words(value)
        return f"-{_VIDEO_VOKEN if video_voken and words == _WORDS['voken'] else words}"
    if (block, field) == ("student", "distill_head") and isinstance(value, bool):
        return _HEAD[value]
    if (block, field) == ("teacher", "objectives"):
        ordered = sorted(value, key=lambda o: _OBJECTIVE_ORDER.index(o) if o in _OBJECTIVE_ORDER else len(value))
        return f" from T^{{{_words(ordered)}}}"
    words = _words(value)
    if (block, field) == ("teacher", "visual_input"):
        return f" ({words})"
    return f" {field}={words}" if block == "student" else f" (teacher {field}={words})"


def _words(value: Any) -> str:
    if isinstance(value, dict):
        return "+".join(_words(k) if v == 1 else f"{_words(k)} {_words(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "+".join(_words(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return _WORDS.get(value, str(value)) if isinstance(value, str) else str(value).lower()


def _name_part(field: str, value: Any) -> str:
    """How a value reads in an artifact name: `mlm`, `ct-mlm`, `middle_frame`, `kd-nst-crd`, `kd-nst0.5`."""
    text = _slug(value) if isinstance(value, (str, list)) else f"{field}-{_slug(value)}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _slug(value: Any) -> str:
    if isinstance(value, dict):
        return "-".join(k if v == 1 else f"{k}{_slug(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "-".join(_slug(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else str(value).lower()


def _joined(name: str, parts: list[str]) -> str:
    return "-".join([name, *parts])


def _error(loc: Loc, message: str) -> InitErrorDetails:
    # The message goes in as context: a message holding braces (`kd: {}`) is not a template.
    details = PydanticCustomError("ablation", "{message}", {"message": message})
    return InitErrorDetails(type=details, loc=loc, input=None)


def _raise(errors: list[InitErrorDetails]) -> None:
    if errors:
        raise ValidationError.from_exception_data("ablations", errors)


def error_at(loc: Loc, message: str) -> ValidationError:
    """A validation error at `loc` of the pipeline spec (a validator raises it as it is, path and all)."""
    return ValidationError.from_exception_data("ablations", [_error(loc, message)])


def _path(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _message(error: Mapping[str, Any]) -> str:
    message = error["msg"].removeprefix("Value error, ")
    return f"{_path(error['loc'])}: {message}" if error["loc"] else message


def _at(where: Loc, field: str, error: Mapping[str, Any]) -> InitErrorDetails:
    """An error of a spec with `field` set to one axis value, at that value's path."""
    if error["loc"][:1] == (field,):
        return _error(where + tuple(error["loc"][1:]), error["msg"].removeprefix("Value error, "))
    return _error(where, _message(error))
