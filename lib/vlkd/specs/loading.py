"""Reading specs from YAML and turning validation failures into `field.path: message` lines."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from vlkd.errors import SpecError
from vlkd.specs.data import PreprocessSpec, TextSpec
from vlkd.specs.distill import DistillSpec
from vlkd.specs.evaluate import EvalSpec
from vlkd.specs.pipeline import PipelineSpec
from vlkd.specs.teacher import TeacherSpec

SPEC_TYPES: dict[str, type[BaseModel]] = {
    "preprocess": PreprocessSpec,
    "text": TextSpec,
    "teacher": TeacherSpec,
    "distill": DistillSpec,
    "eval": EvalSpec,
    "pipeline": PipelineSpec,
}
STAGES = tuple(SPEC_TYPES)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently, hiding typos)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        problem = f"not a YAML text file: byte {exc.start} is not UTF-8; give the spec's YAML"
        raise SpecError(str(path), [problem]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise SpecError(source, [f"YAML syntax error at {where}: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:  # a control character: a binary file, most likely
        problem = f"not a YAML text file: character {exc.position} is the control character #x{exc.character:04x}"
        raise SpecError(source, [f"{problem}; give the spec's YAML"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"YAML error: {exc}"]) from None


def parse_spec(data: Any, stage: str | None = None, source: str = "<spec>") -> Any:
    """Validate `data` as the spec of `stage` (or of the stage its own `stage:` key names)."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"expected a mapping of spec fields, got {type(data).__name__}"])
    declared = data.get("stage")
    if stage is not None and stage not in SPEC_TYPES:
        raise SpecError(source, [f"stage: unknown stage {stage!r}; available: {', '.join(STAGES)}"])
    if declared is None and stage is None:
        raise SpecError(source, [f"stage: missing; add `stage: <{'|'.join(STAGES)}>` to the spec"])
    if declared is not None and declared not in SPEC_TYPES:
        raise SpecError(source, [f"stage: unknown stage {declared!r}; available: {', '.join(STAGES)}"])
    if declared is not None and stage is not None and declared != stage:
        raise SpecError(source, [f"stage: this is a {declared} spec, not a {stage} spec"])
    model = SPEC_TYPES[stage or declared]
    try:
        return model.model_validate({**data, "stage": stage or declared})
    except ValidationError as exc:
        raise SpecError(source, format_errors(exc, model, data)) from None


def load_spec(path: Path | str, stage: str | None = None) -> Any:
    path = Path(path)
    return parse_spec(load_yaml(path), stage, str(path))


def format_errors(exc: ValidationError, model: type[BaseModel], data: Any) -> list[str]:
    """One `field.path: message` line per error of the spec the user wrote (`data`), with a suggestion for misspelt
    field names; each error once, under the user's own path. A spec's wiring copies values (a pipeline's `name` and
    `storage` into each stage, the eval's `finetune` into each task's) and builds refs from names
    (`features/<name>`): a wrong value fails again in each copy, which is no error of its own."""
    errors = exc.errors(include_url=False)
    written = [error for error in errors if _written(data, error)]
    lines: list[str] = []
    for error in errors:
        if not _written(data, error) and any(_made_from(error, source) for source in written):
            continue
        line = _line(error, model)
        if line not in lines:
            lines.append(line)
    return lines


def _line(error: ErrorDetails, model: type[BaseModel]) -> str:
    loc = _loc(error)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field" + _suggest(model, loc)
    elif error["type"] == "missing":
        message = "required field is missing"
    return f"{path}: {message}" if path else message


def _loc(error: ErrorDetails) -> list[Any]:
    return [part for part in error["loc"] if part != "[key]"]


def _written(data: Any, error: ErrorDetails) -> bool:
    """Whether the user wrote the value the error is about (for a missing field, the block that lacks it). A path
    reaching into a value written in short (`models: [student/a]` for `{ref: student/a}`) was written."""
    loc = _loc(error)
    for part in loc[:-1] if error["type"] == "missing" else loc:
        if not isinstance(data, dict | list):
            return True
        if part not in (data if isinstance(data, dict) else range(len(data))):
            return False
        data = data[part]
    return True


def _made_from(error: ErrorDetails, source: ErrorDetails) -> bool:
    """Whether the wiring made the value of `error` from the wrong value of `source`: a copy, or a ref built from
    it."""
    made, wrong = error["input"], source["input"]
    if made is None or wrong is None:
        return False
    return made == wrong or (isinstance(made, str) and isinstance(wrong, str) and wrong != "" and wrong in made)


def _suggest(model: type[BaseModel], loc: list[Any]) -> str:
    fields = _fields_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1) if fields else []
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid fields: {', '.join(fields)}" if fields else ""


def _fields_at(model: type[BaseModel] | None, loc: list[Any]) -> list[str]:
    """The field names of the model found by walking `loc` through nested models, lists and dicts."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def spec_schema(stage: str) -> dict[str, Any]:
    if stage not in SPEC_TYPES:
        raise SpecError("schema", [f"unknown stage {stage!r}; available: {', '.join(STAGES)}"])
    return SPEC_TYPES[stage].model_json_schema()
