"""The paper's ablation tables from one pipeline spec (Sec. 5.2: Tables 3, 5 and 6).

A table varies fields of the pipeline's teacher (`teacher: {FIELD: [values]}`) and of its distilled student, the
template of the cells (`student: {FIELD: [values]}`); every combination of values is a cell, a student distilled
and evaluated like any other, from the pipeline's teacher or, when the cell changes a teacher field, from a
teacher of its own.

A cell is named for what it is, so that equal specs get equal names and run once (the pipeline's skip rule does the
rest), whichever tables they appear in: a teacher is the pipeline teacher's name plus the values that differ from
it (`howto100m-6l-mlm`); a student is the template's name plus its teacher's suffix plus its value of every student
axis of the spec (`wiki103-6l-mlm-kd-nst`). The template itself runs only as its cells.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from vlkd.specs.base import StrictModel
from vlkd.specs.distill import DistillSpec
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
# How values read in a row label: the paper's words (Tables 3, 5, 6).
_WORDS = {
    "soft_label": "Soft label",
    "regression": "Regression",
    "nst": "NST",
    "nst_poly": "NST-poly",
    "crd": "CRD",
    "voken": "Voken",
    "ct": "CT",
    "mlm": "MLM",
    "video": "Video",
    "middle_frame": "Image",
}
Values = Annotated[list[Any], Field(min_length=1)]
Wire = Callable[[dict[str, Any], TeacherSpec], dict[str, Any]]
"""(a student's spec data, its teacher) -> the data with the pipeline's wiring (e.g. the voken bank's features)"""
Loc = tuple[str | int, ...]


class AblationSpec(StrictModel):
    """One table: axes over fields of the teacher and of the distilled student. A row per cell (every combination),
    the teacher's axes outermost, so the cells sharing a teacher form a block, as in Table 6."""

    title: str = Field("", description="the table's heading; default: its key")
    teacher: dict[str, Values] = Field(
        default_factory=dict, description="teacher field -> its values, e.g. objectives: [[mlm], [ct], [ct, mlm]]"
    )
    student: dict[str, Values] = Field(
        default_factory=dict, description="distilled student field -> its values, e.g. kd: [{nst: 1.0}, {crd: 1.0}]"
    )

    @model_validator(mode="after")
    def _valid_axes(self) -> AblationSpec:
        errors = [] if self.axes else [_error((), "give an axis: teacher: {FIELD: [values]} or student: {...}")]
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
    """Every table's cells, in order. Raises a ValidationError at the path (`ablations.NAME.student.kd[2]`) of
    each value that makes an invalid spec, and where two different cells would get one name."""
    normal = _normalized(teacher, student, tables, wire)
    student_axes = list(dict.fromkeys(field for table in tables.values() for field in table.student))
    cells, named, errors = [], {}, []
    for key, table in tables.items():
        axes = [[(block, field, i, v) for i, v in enumerate(values)] for block, field, values in table.axes]
        for picks in itertools.product(*axes):
            changed = sorted(
                (p for p in picks if p[0] == "teacher" and normal[(key, *p[:3])] != getattr(teacher, p[1])),
                key=lambda p: p[1],
            )
            label = _row(
                [(field, value) for block, field, _, value in picks if block == "student"],
                [(field, value) for block, field, _, value in picks if block == "teacher"],
            )
            try:
                cell = _cell(key, picks, changed, label, teacher, student, student_axes, wire)
            except ValidationError as exc:
                errors += [_error(("ablations", key), f"cell {label}: {_message(e)}") for e in exc.errors()]
                continue
            for made in (cell.teacher, cell.student):
                if named.setdefault((made.stage, made.name), made) != made:
                    errors.append(_error(("ablations", key), f"two different cells are named {made.name!r}"))
            cells.append(cell)
    _raise(errors)
    return cells


def _cell(
    key: str,
    picks: tuple[Pick, ...],
    changed: list[Pick],
    label: str,
    teacher: TeacherSpec,
    student: DistillSpec,
    student_axes: list[str],
    wire: Wire,
) -> Cell:
    """The cell of these values; `changed`: the teacher's values that differ from the pipeline teacher's, by field
    name (a name and a row say them in one order, whichever table the cell is in)."""
    chosen = {block: {field: value for b, field, _, value in picks if b == block} for block in BLOCKS}
    suffix = [_name_part(field, value) for _, field, _, value in changed]
    if changed:
        data = {**teacher.model_dump(mode="json"), **chosen["teacher"], "name": _joined(teacher.name, suffix)}
        teacher = TeacherSpec.model_validate(data)
    template = student.model_dump(mode="json")
    own = {field: chosen["student"].get(field, template[field]) for field in student_axes}
    data = {
        **template,
        **chosen["student"],
        "name": _joined(student.name, suffix + [_name_part(field, value) for field, value in own.items()]),
        "teacher": f"teacher/{teacher.name}",
    }
    row = _row(list(own.items()), [(field, value) for _, field, _, value in changed])
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


def _row(student: list[tuple[str, Any]], teacher: list[tuple[str, Any]]) -> str:
    """A row label, as the paper writes them: `+ KD-NST`, `+ KD from T^{MLM}`, `+ KD-Voken (Image)`."""
    parts = [_fragment("student", field, value) for field, value in student]
    return "+ KD" + "".join(parts + [_fragment("teacher", field, value) for field, value in teacher])


def _fragment(block: str, field: str, value: Any) -> str:
    """How a value reads in a row label: `-NST`, ` from T^{MLM}`, ` (Image)`."""
    words = _words(value)
    if (block, field) == ("student", "kd"):
        return f"-{words}"
    if (block, field) == ("teacher", "objectives"):
        return f" from T^{{{words}}}"
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
