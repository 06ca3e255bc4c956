"""`vlkd artifacts ...`: push, list, show, fetch, trace and tag versioned artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from vlkd import housekeeping
from vlkd.artifacts import ArtifactStore, LineageNode, Manifest, collect_files
from vlkd.cli.output import console, err_console, human_size, human_time, parse_duration, plural, transfer_progress
from vlkd.errors import RefError, VlkdError
from vlkd.refs import ArtifactRef

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Versioned artifacts in the store: push, ls, show, get, lineage, tag, gc.",
)

Store = Annotated[
    Optional[str],  # noqa: UP045 - typer reads the annotation at runtime on Python 3.10
    typer.Option(
        "--store",
        help="artifact store: s3://BUCKET/PREFIX, file:///PATH or a folder [default: $VLKD_STORE, else ~/.vlkd/store]",
        show_default=False,
    ),
]


def _store(uri: str | None) -> ArtifactStore:
    return ArtifactStore.open(uri)


def _ref(text: str) -> ArtifactRef:
    return ArtifactRef.parse(text)


def _warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@app.command()
def push(
    target: str = typer.Argument(..., help="KIND/NAME of the new version, e.g. dataset/howto100m"),
    paths: list[Path] = typer.Argument(..., help="files and folders (a folder contributes its contents)"),
    parent: list[str] = typer.Option([], "--parent", "-p", help="an artifact this one was made from (repeat)"),
    attr: list[str] = typer.Option([], "--attr", help="KEY=VALUE recorded in the manifest (repeat)"),
    new_version: bool = typer.Option(
        False, "--new-version", help="publish even when the latest version holds the same files, parents and attributes"
    ),
    store: Store = None,
) -> None:
    """Import external files (a raw dataset, encoder weights, a vocab) as a new version, unless the latest version
    already holds them."""
    ref = _ref(target)
    if ref.pinned or ref.alias != "latest" or ":" in target:
        raise RefError(f"push creates the next version itself: give KIND/NAME (e.g. {ref.path}), not {target}")
    attributes = dict(_key_value(a) for a in attr)
    files = collect_files(paths)
    artifacts = _store(store)
    with transfer_progress(f"push {ref.path}", sum(p.stat().st_size for p in files.values())) as progress:
        if new_version:
            manifest = artifacts.publish(
                ref.kind, ref.name, files, parents=parent, attributes=attributes, progress=progress
            )
        else:
            manifest, new = artifacts.publish_unless_unchanged(
                ref.kind, ref.name, files, parents=parent, attributes=attributes, progress=progress
            )
            if not new:
                console.print(
                    f"unchanged: {manifest.ref} already holds these files, parents and attributes "
                    "(--new-version publishes anyway)",
                    highlight=False,
                )
                return
    console.print(
        f"published {manifest.ref} ({plural(len(manifest.files), 'file')}, {human_size(manifest.total_size)})",
        highlight=False,
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise VlkdError(f"--attr {text!r}: use KEY=VALUE")
    return key, value


@app.command("ls")
def list_artifacts(
    kind: Optional[str] = typer.Argument(None, help="only this kind"),  # noqa: UP045
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    store: Store = None,
) -> None:
    """List artifacts with their latest version, version count and aliases."""
    artifacts = _store(store)
    listing = artifacts.list(kind)
    for damaged in listing.damaged:
        _warn(f"left out: {damaged}")
    summaries = listing.artifacts
    if as_json:
        rows = [
            {
                "artifact": f"{s.kind}/{s.name}",
                "latest": str(s.latest.ref),
                "versions": s.versions,
                "aliases": s.aliases,
            }
            for s in summaries
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not summaries:
        console.print(f"no artifacts{' of kind ' + kind if kind else ''} in {artifacts.uri}", highlight=False)
        return
    table = Table("ARTIFACT", "LATEST", "VERSIONS", "ALIASES", "SIZE", "CREATED", box=None, highlight=False)
    for s in summaries:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(s.aliases.items()))
        table.add_row(
            f"{s.kind}/{s.name}",
            f"v{s.latest.version}",
            str(len(s.versions)),
            aliases,
            human_size(s.latest.total_size),
            human_time(s.latest.created_at),
        )
    console.print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., help="KIND/NAME[:vN|:ALIAS]"),
    as_json: bool = typer.Option(False, "--json", help="print the raw manifest"),
    store: Store = None,
) -> None:
    """Describe one version: provenance, parents, metrics, files and the spec that made it."""
    artifacts = _store(store)
    manifest = artifacts.manifest(_ref(ref))
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    latest = artifacts.resolve(ArtifactRef(manifest.kind, manifest.name))
    aliases = {"latest": latest.version or 0, **artifacts.aliases(manifest.kind, manifest.name)}
    _print_manifest(manifest, sorted(a for a, v in aliases.items() if v == manifest.version))


def _cost(cost: dict[str, float]) -> str:
    if not cost:
        return "-"
    return f"{cost['wall_seconds']:g} s wall, {cost['cpu_hours']:.4g} CPU-hours, {cost['gpu_hours']:.4g} GPU-hours held"


def _clips(metrics: dict[str, Any], spec: dict[str, Any]) -> str:
    """A features artifact's clips at a glance: how many, what `max_frames` trimmed (artifacts made before vlkd
    counted it do not say) and how many inputs were left out."""
    facts = [f"{plural(metrics['clips'], 'clip')} from {plural(metrics['videos'], 'video')}"]
    if "trimmed_clips" in metrics:
        facts.append(
            f"{metrics['trimmed_clips']} trimmed to max_frames ({spec['max_frames']}), "
            f"{metrics['trimmed_seconds']:g} s left out"
        )
    facts.append(f"{plural(metrics['skipped'], 'input')} skipped (skipped.jsonl)")
    return "; ".join(facts)


def _print_manifest(manifest: Manifest, tags: list[str]) -> None:
    facts = {
        "created": f"{human_time(manifest.created_at)} (vlkd {manifest.vlkd_version})",
        "job": f"{manifest.job_id}  (log: vlkd logs {manifest.job_id})" if manifest.log else manifest.job_id or "-",
        "cost": _cost(manifest.cost),
        "aliases": ", ".join(tags) or "-",
        "size": f"{plural(len(manifest.files), 'file')}, {human_size(manifest.total_size)}",
        "parents": ", ".join(manifest.parents) or "-",
    }
    if manifest.kind == "features" and "clips" in manifest.metrics:  # made by preprocess, not pushed
        facts["clips"] = _clips(manifest.metrics, manifest.spec)
    console.print(f"[bold]{manifest.ref}[/]", highlight=False)
    for key, value in facts.items():
        console.print(f"  {key:<9} {value}", highlight=False, markup=False)
    for title, values in (("attributes", manifest.attributes), ("metrics", manifest.metrics)):
        if values:
            console.print(f"  {title}", highlight=False)
            _print_yaml(values)
    table = Table("PATH", "SIZE", "SHA256", box=None, highlight=False, padding=(0, 2))
    for entry in manifest.files:
        table.add_row(entry.path, human_size(entry.size), entry.sha256[:16])
    console.print("  files")
    console.print(table)
    if manifest.spec is not None:
        console.print("  spec", highlight=False)
        _print_yaml(manifest.spec)


class _Inline(dict):
    """A mapping `_print_yaml` writes on one line."""


class _InlineList(list):
    """A list `_print_yaml` writes on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Inline, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_InlineList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_INLINE_WIDTH = 80


def _inline_short(value: Any) -> Any:
    """`value` with every collection of plain values that fits in _INLINE_WIDTH marked to be written on one line."""
    if isinstance(value, dict):
        inner = {k: _inline_short(v) for k, v in value.items()}
        plain, kind = all(not isinstance(v, dict | list) for v in value.values()), _Inline
    elif isinstance(value, list):
        inner = [_inline_short(v) for v in value]
        plain, kind = all(not isinstance(v, dict | list) for v in value), _InlineList
    else:
        return value
    flat = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()
    return kind(inner) if plain and len(flat) <= _INLINE_WIDTH else inner


def _print_yaml(values: dict[str, Any]) -> None:
    """Indented YAML, as specs are written: a short collection of plain values on one line
    (`kd: {nst: 1.0, crd: 1.0}`), longer and deeper ones as blocks, no line broken."""
    text = yaml.dump(_inline_short(values), Dumper=_Dumper, sort_keys=False, width=float("inf"))
    for line in text.splitlines():
        console.print(f"    {line}", highlight=False, markup=False)


@app.command()
def get(
    ref: str = typer.Argument(..., help="KIND/NAME[:vN|:ALIAS]"),
    output: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--output", "-o", help="destination folder [default: ./KIND-NAME-vN]", show_default=False
    ),
    force: bool = typer.Option(False, "--force", help="overwrite local files that differ from the artifact's"),
    store: Store = None,
) -> None:
    """Download a version, every file verified against its sha256. Files already there with the same content are
    kept (an interrupted get resumes); a file that differs stops it, unless --force."""
    artifacts = _store(store)
    manifest = artifacts.manifest(_ref(ref))
    dest = output or Path(f"{manifest.kind}-{manifest.name}-v{manifest.version}")
    with transfer_progress(f"get {manifest.ref}", manifest.total_size) as progress:
        artifacts.fetch(manifest.ref, dest, progress, overwrite=force)
    console.print(
        f"fetched {manifest.ref} into {dest} ({plural(len(manifest.files), 'file')}, verified)", highlight=False
    )


@app.command()
def lineage(ref: str = typer.Argument(..., help="KIND/NAME[:vN|:ALIAS]"), store: Store = None) -> None:
    """Print the tree of artifacts this one was made from."""
    root = _store(store).lineage(_ref(ref))
    tree = Tree(_lineage_label(root), highlight=False)
    _add_parents(tree, root, {root.ref})
    console.print(tree)


def _lineage_label(node: LineageNode) -> str:
    if node.damaged:
        return f"{node.ref}  [red](damaged manifest: see `vlkd artifacts show {node.ref}`)[/]"
    if node.manifest is None:
        return f"{node.ref}  [red](missing from the store)[/]"
    made_by = node.manifest.spec.get("stage") if node.manifest.spec else "pushed"
    return f"[bold]{node.ref}[/]  {made_by}, {human_time(node.manifest.created_at)}"


def _add_parents(tree: Tree, node: LineageNode, shown: set[str]) -> None:
    """Add `node`'s parents under `tree`; a parent already shown with its own parents is named, not repeated (the
    students of one teacher share its whole lineage)."""
    for parent in node.parents:
        if parent.ref in shown and parent.parents:
            tree.add(f"{parent.ref}  (see above)")
            continue
        shown.add(parent.ref)
        _add_parents(tree.add(_lineage_label(parent)), parent, shown)


@app.command()
def tag(
    ref: str = typer.Argument(..., help="the version to tag, KIND/NAME[:vN|:ALIAS]"),
    alias: str = typer.Argument(..., help="alias to set or move, e.g. best"),
    store: Store = None,
) -> None:
    """Point an alias at a version (`latest` moves by itself on every publish)."""
    pinned = _store(store).tag(_ref(ref), alias)
    console.print(f"{pinned.path}:{alias} -> {pinned}", highlight=False)


@app.command()
def gc(
    older_than: str = typer.Option("24h", help="only drafts claimed longer ago than this (e.g. 30m, 24h, 7d)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list, do not delete"),
    store: Store = None,
) -> None:
    """Remove the leftovers of interrupted publishes (versions that never got a manifest) and the checkpoints of
    jobs that ended and published (a running or failed job keeps them: they are its resume); report versions whose
    manifest is damaged."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise VlkdError(f"--older-than: {exc}") from None
    garbage = housekeeping.gc(_store(store), age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for ref in garbage.drafts:
        console.print(f"{verb} {ref} (never published)", highlight=False)
    for run in garbage.checkpoints:
        made = ", ".join(str(ref) for ref in run.published)
        console.print(
            f"{verb} {run.prefix}/ ({human_size(run.size)}; its job ended and published {made})", highlight=False
        )
    for damaged in garbage.damaged:
        _warn(f"kept: {damaged}")
    summary = f"{verb} {plural(len(garbage.drafts), 'abandoned draft')}"
    if garbage.checkpoints:
        size = human_size(sum(run.size for run in garbage.checkpoints))
        summary += f" and the checkpoints of {plural(len(garbage.checkpoints), 'finished job')} ({size})"
    console.print(summary, highlight=False)
