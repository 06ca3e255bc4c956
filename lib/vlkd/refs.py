"""Artifact references: `kind/name:vN` (an immutable version) or `kind/name:alias` (a movable pointer).

A ref with neither part means `kind/name:latest`. Refs are plain values, parsed once at the boundary (specs,
CLI) so the rest of the code never handles raw strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from vlkd.errors import RefError

# What the stages exchange; `dataset` and `weights` are imported with `vlkd artifacts push`.
KINDS = ("dataset", "weights", "features", "tokenizer", "corpus", "teacher", "student", "eval")
LATEST = "latest"

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?"
_ALIAS = r"[A-Za-z][A-Za-z0-9._-]{0,62}"
_REF = re.compile(rf"^(?P<kind>[a-z]+)/(?P<name>{_NAME})(?::(?:v(?P<version>[1-9][0-9]*)|(?P<alias>{_ALIAS})))?$")
_NAME_RE = re.compile(rf"^{_NAME}$")
_ALIAS_RE = re.compile(rf"^{_ALIAS}$")
_VERSION_LIKE = re.compile(r"^v[0-9]+$")
REF_PATTERN = _REF.pattern


def check_name(name: str) -> str:
    """Validate an artifact name (it becomes an object-store key and a Kubernetes label value)."""
    if not _NAME_RE.match(name):
        raise RefError(
            f"invalid artifact name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if _VERSION_LIKE.match(alias) or not _ALIAS_RE.match(alias):
        raise RefError(
            f"invalid alias {alias!r}: use a letter followed by letters, digits, '.', '_' or '-' "
            "(and not the form vN, which names a version)"
        )
    return alias


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """`kind/name` plus either a version number or an alias (never both)."""

    kind: str
    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RefError(f"unknown artifact kind {self.kind!r}; available: {', '.join(KINDS)}")
        check_name(self.name)
        if self.version is not None and self.alias is not None:
            raise RefError(f"{self.path}: a ref names a version or an alias, not both")
        if self.version is None and self.alias is None:
            object.__setattr__(self, "alias", LATEST)
        if self.alias is not None:
            check_alias(self.alias)
        if self.version is not None and self.version < 1:
            raise RefError(f"{self.path}: versions start at v1")

    @classmethod
    def parse(cls, text: str | ArtifactRef) -> ArtifactRef:
        if isinstance(text, ArtifactRef):
            return text
        match = _REF.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise RefError(
                f"invalid artifact ref {text!r}: expected KIND/NAME, KIND/NAME:vN or KIND/NAME:ALIAS "
                f"(e.g. teacher/howto100m:v3), KIND one of {', '.join(KINDS)}"
            )
        kind = match["kind"]
        if kind not in KINDS:
            raise RefError(f"invalid artifact ref {text!r}: unknown kind {kind!r}; available: {', '.join(KINDS)}")
        version = int(match["version"]) if match["version"] else None
        return cls(kind, match["name"], version, match["alias"])

    @property
    def path(self) -> str:
        """`kind/name`, the artifact without a version."""
        return f"{self.kind}/{self.name}"

    @property
    def pinned(self) -> bool:
        """True when the ref names an immutable version rather than an alias."""
        return self.version is not None

    def at_version(self, version: int) -> ArtifactRef:
        return ArtifactRef(self.kind, self.name, version)

    def __str__(self) -> str:
        return f"{self.path}:v{self.version}" if self.version is not None else f"{self.path}:{self.alias}"

    # pydantic integration: a ref is a string in YAML/JSON and an ArtifactRef in Python.
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _parse_for_pydantic, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {"type": "string", "pattern": REF_PATTERN, "examples": ["teacher/howto100m:v3", "corpus/wiki103"]}


def _parse_for_pydantic(text: Any) -> ArtifactRef:
    # pydantic reports ValueError as a validation error at the field's path; RefError would escape.
    if not isinstance(text, (str, ArtifactRef)):
        raise ValueError(f"expected an artifact ref string such as teacher/NAME:v1, got {type(text).__name__}")
    try:
        return ArtifactRef.parse(text)
    except RefError as exc:
        raise ValueError(str(exc)) from None


def spec_ref(value: Any) -> ArtifactRef | None:
    """The artifact ref a value in a spec's data names (`kind/name[:vN|:alias]`); None for anything else (a URI,
    a name, a number)."""
    if not (isinstance(value, str) and "/" in value and value.split("/", 1)[0] in KINDS):
        return None
    try:
        return ArtifactRef.parse(value)
    except RefError:
        return None
