"""What a spec has already published: the skip rule that `vlkd submit` and pipelines share.

A stage's outputs are "already published" for a spec when the latest version of each was made by that very spec
reading the very versions its refs name now (`features/x` pinned to `features/x:v3`). Running it again would only
make byte-for-byte retrainings under new version numbers and push every later stage to redo its work, so both
skip it unless forced; a new version of any input makes the spec new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.errors import NotFoundError
from vlkd.refs import ArtifactRef, spec_ref
from vlkd.specs import StageSpec, parse_spec


def pin_refs(value: Any, store: ArtifactStore) -> Any:
    """Every artifact ref in a spec's data, pinned to the version it names now."""
    return _map_refs(value, lambda ref: str(store.resolve(ref)))


def pin_spec(spec: StageSpec, store: ArtifactStore, source: str) -> StageSpec:
    """The spec with its refs pinned (`pin_refs`): what its job reads, and what its lineage will record."""
    return parse_spec(pin_refs(spec.model_dump(mode="json"), store), spec.stage, source)


def refs_in(value: Any) -> list[ArtifactRef]:
    """Every artifact ref in a spec's data, in the order it lists them."""
    found: list[ArtifactRef] = []
    _map_refs(value, lambda ref: found.append(ref))
    return found


def as_consumed(manifest: Manifest) -> dict[str, Any] | None:
    """The spec a version was made for, each ref pinned to the version its job read (the manifest's parents): a job
    submitted with `dataset/x` that read `dataset/x:v3` made it for `dataset/x:v3`, as a pipeline pins it."""
    parents = {ArtifactRef.parse(parent).path: parent for parent in manifest.parents}
    return _map_refs(manifest.spec, lambda ref: parents.get(ref.path) if ref.version is None else None)


def _map_refs(value: Any, pin: Callable[[ArtifactRef], str | None]) -> Any:
    """A spec's data with each artifact ref replaced by what `pin` makes of it (None: left as written)."""
    if isinstance(value, dict):
        return {k: _map_refs(v, pin) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_refs(v, pin) for v in value]
    if (ref := spec_ref(value)) is not None:
        return pin(ref) or value
    return value


def latest_outputs(spec: StageSpec, store: ArtifactStore) -> dict[str, Manifest | None]:
    """The latest version of each of the spec's outputs, by kind (None: not published yet)."""
    latest: dict[str, Manifest | None] = {}
    for kind in type(spec).outputs:
        try:
            latest[kind] = store.manifest(ArtifactRef(kind, spec.name))
        except NotFoundError:
            latest[kind] = None
    return latest


def made_for(spec: StageSpec, latest: dict[str, Manifest | None]) -> list[Manifest] | None:
    """The outputs in `latest` (`latest_outputs`) when this exact pinned spec made every one of them, else None."""
    wanted = spec.model_dump(mode="json")
    found = [m for m in latest.values() if m is not None and as_consumed(m) == wanted]
    return found if len(found) == len(latest) else None


def outputs_of(spec: StageSpec, store: ArtifactStore) -> list[Manifest] | None:
    """The artifacts this exact pinned spec already published (the latest version of each output), or None."""
    return made_for(spec, latest_outputs(spec, store))
