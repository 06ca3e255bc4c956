"""What a pipeline run would do now, without running anything (`vlkd pipeline plan`): before days of GPU time, which
stages a run skips, which it runs and why, and in what order. Decided as the run decides (`vlkd.pipeline`): a stage's
refs pinned to the versions that exist now (`pin_spec`), skipped where its outputs exist for that pinned spec
(`outputs_of`), unless forced. A stage after one that runs reads outputs not made yet, and a stage's job always
publishes a new version, so it runs too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vlkd.artifacts import ArtifactStore
from vlkd.pipeline import check_inputs, published_before
from vlkd.published import as_consumed, latest_outputs, made_for, pin_spec, refs_in
from vlkd.specs import PipelineSpec, StageSpec
from vlkd.stage_dag import stage_needs


@dataclass(frozen=True)
class PlannedStage:
    """A stage as a run started now would take it."""

    key: str
    runs: bool
    why: str
    """what it reads, or the stages it waits for, or what it published"""


def plan_pipeline(pipeline: PipelineSpec, store: ArtifactStore, force: bool = False) -> list[PlannedStage]:
    """Each stage in the DAG's order, as a run started now with `force` would take it: one that runs after others
    names those of the stages it waits for (`stage_needs`) that run too. Inputs no stage makes must exist, as for a
    run (`check_inputs`)."""
    stages = pipeline.stages()
    needs = stage_needs(stages)
    check_inputs(stages, store)
    running: set[str] = set()
    planned = []
    for key, spec in stages:
        after = sorted(needs[key] & running)
        if after:
            runs, why = True, f"after {', '.join(after)} publish{'es' if len(after) == 1 else ''}"
        else:
            runs, why = _now(key, spec, store, force)
        if runs:
            running.add(key)
        planned.append(PlannedStage(key, runs, why))
    return planned


def _now(key: str, spec: StageSpec, store: ArtifactStore, force: bool) -> tuple[bool, str]:
    """(runs, why) for a stage whose inputs all exist now."""
    pinned = pin_spec(spec, store, key)
    latest = latest_outputs(pinned, store)  # read once: whether it runs, and why
    existing = made_for(pinned, latest)
    if existing is not None and published_before(existing, None, force):  # the run's rule, from this machine
        return False, "published for this spec and these inputs: " + ", ".join(str(m.ref) for m in existing)
    if existing is not None:
        return True, f"forced (published as {', '.join(str(m.ref) for m in existing)})"
    wanted = pinned.model_dump(mode="json")
    for manifest in filter(None, latest.values()):
        if (made := as_consumed(manifest)) != wanted:
            return True, f"changed since {manifest.ref}: {_changes(made or {}, wanted)}"
    missing = [f"{kind}/{spec.name}" for kind, manifest in latest.items() if manifest is None]
    reads = ", ".join(str(ref) for ref in dict.fromkeys(refs_in(wanted)))
    return True, f"{', '.join(missing)} not published yet" + (f"; reads {reads}" if reads else "")


def _changes(before: dict[str, Any], after: dict[str, Any], most: int = 3) -> str:
    """The fields of a stage's spec that differ, as `path: before -> after` (the first `most`): a new input version
    (`videos: dataset/x:v1 -> dataset/x:v2`) or a setting."""
    found = [f"{path}: {_short(old)} -> {_short(new)}" for path, old, new in _differing(before, after, "")]
    more = f"; and {len(found) - most} more" if len(found) > most else ""
    return "; ".join(found[:most]) + more


def _differing(before: Any, after: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        keys = list(dict.fromkeys([*before, *after]))
        return [d for k in keys for d in _differing(before.get(k), after.get(k), f"{path}.{k}" if path else k)]
    return [] if before == after else [(path, before, after)]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
