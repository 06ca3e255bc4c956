"""A pipeline's stages as a DAG: which stage waits for which (`stage_needs`), and what stages that may run at once
ask for together (`most_at_once`). The runner (`vlkd.pipeline`) starts stages by the first; the pipeline job's
cluster (`vlkd.backends.k8s_render`) sizes its worker groups by the second."""

from __future__ import annotations

from vlkd.published import refs_in
from vlkd.refs import LATEST, ArtifactRef
from vlkd.specs import StageSpec


def stage_needs(stages: list[tuple[str, StageSpec]]) -> dict[str, set[str]]:
    """Each stage's key -> the keys of the stages it waits for: those that publish an artifact it reads at
    `latest` (a ref pinned to a version, or naming another alias, reads what exists, whatever the run makes)."""
    makers = artifact_makers(stages)
    return {
        key: {makers[ref.path] for ref in refs_in(spec.model_dump(mode="json")) if made_here(ref, makers)} - {key}
        for key, spec in stages
    }


def artifact_makers(stages: list[tuple[str, StageSpec]]) -> dict[str, str]:
    """`kind/name` of each artifact a stage publishes -> that stage's key."""
    return {f"{kind}/{spec.name}": key for key, spec in stages for kind in type(spec).outputs}


def made_here(ref: ArtifactRef, makers: dict[str, str]) -> bool:
    """Whether a stage of the run makes what `ref` reads (so its reader waits for that stage)."""
    return ref.alias == LATEST and ref.path in makers


def most_at_once(needs: dict[str, set[str]], asks: dict[str, int], limit: int) -> int:
    """The most that stages running at once ask for together: the largest sum of `asks` (stage key -> e.g. workers
    of one shape) over at most `limit` stages none of which waits, directly or through others, for another.
    Branch and bound over the asking stages, largest first: a pipeline has tens of stages, and where every one may
    run beside every other (the ablations' students) the first branch is the answer and bounds all the others."""
    before = _waited_for(needs)
    ordered = sorted((key for key, ask in asks.items() if ask > 0), key=lambda key: -asks[key])
    best = 0

    def grow(start: int, chosen: list[str], total: int) -> None:
        nonlocal best
        best = max(best, total)
        room = limit - len(chosen)
        if room == 0 or total + sum(asks[key] for key in ordered[start : start + room]) <= best:
            return
        for index in range(start, len(ordered)):
            key = ordered[index]
            if all(key not in before[other] and other not in before[key] for other in chosen):
                grow(index + 1, [*chosen, key], total + asks[key])

    grow(0, [], 0)
    return best


def _waited_for(needs: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each stage -> every stage it waits for, directly or through others."""
    closed: dict[str, set[str]] = {}

    def of(key: str) -> set[str]:
        if key not in closed:
            closed[key] = set()  # a cycle (none in a valid pipeline) ends here instead of recursing for ever
            closed[key] = set().union(*(of(need) | {need} for need in needs.get(key, ())))
        return closed[key]

    for key in needs:
        of(key)
    return closed
