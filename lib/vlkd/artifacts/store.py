"""`ArtifactStore`: publish (through a `Draft`), resolve refs and aliases, list, fetch with checksums, trace
lineage and tag, on one `Storage`. The guarantees are the package's (`vlkd.artifacts`)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vlkd.artifacts.draft import Draft, now, spec_dict
from vlkd.artifacts.manifest import (
    ALIASES,
    CLAIM,
    FILES,
    MANIFEST,
    ROOT,
    ArtifactSummary,
    FileEntry,
    LineageNode,
    Listing,
    Manifest,
    check_file_path,
    sha256_file,
)
from vlkd.errors import ChecksumError, DamagedManifestError, KeyExistsError, NotFoundError, RefError, VlkdError
from vlkd.refs import KINDS, LATEST, ArtifactRef, check_alias, check_name
from vlkd.storage import Progress, Storage, default_store_uri, open_storage

_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_MAX_CLAIM_ATTEMPTS = 1000


def _as_json(value: Any) -> Any:
    """`value` as a manifest holds it once read back (tuples become lists, keys strings), for comparisons."""
    return json.loads(json.dumps(value))


class ArtifactStore:
    """Publish, resolve, fetch and trace artifacts in one store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._manifests: dict[ArtifactRef, Manifest] = {}  # versions are immutable, so caching is safe

    @classmethod
    def open(cls, uri: str | None = None, endpoint_url: str | None = None, region: str | None = None):
        """The store at `uri`, else `$VLKD_STORE`, else `~/.vlkd/store`."""
        return cls(open_storage(uri or default_store_uri(), endpoint_url, region))

    @property
    def uri(self) -> str:
        return self.storage.uri

    # -- layout -------------------------------------------------------------------------------------
    @staticmethod
    def name_prefix(kind: str, name: str) -> str:
        return f"{ROOT}/{kind}/{name}"

    def version_prefix(self, ref: ArtifactRef) -> str:
        return f"{self.name_prefix(ref.kind, ref.name)}/v{ref.version}"

    def taken_versions(self, kind: str, name: str) -> list[int]:
        """Every taken number, published or not."""
        found = (_VERSION_DIR.match(child) for child in self.storage.children(self.name_prefix(kind, name)))
        return sorted(int(m.group(1)) for m in found if m)

    def is_published(self, ref: ArtifactRef) -> bool:
        """Whether the pinned `ref` has a manifest (which may still be damaged: `manifest` says)."""
        return ref in self._manifests or self.storage.exists(f"{self.version_prefix(ref)}/{MANIFEST}")

    # -- publishing ---------------------------------------------------------------------------------
    def draft(self, kind: str, name: str, job_id: str | None = None) -> Draft:
        """Take the next version number of `kind/name` and return a draft to fill and commit."""
        if kind not in KINDS:
            raise RefError(f"unknown artifact kind {kind!r}; available: {', '.join(KINDS)}")
        check_name(name)
        version = max(self.taken_versions(kind, name), default=0) + 1
        claim = {"job_id": job_id, "claimed_at": now().isoformat(), "token": uuid.uuid4().hex}
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            key = f"{self.name_prefix(kind, name)}/v{version}/{CLAIM}"
            try:
                self.storage.write_bytes(key, json.dumps(claim).encode(), exclusive=True)
                return Draft(self, kind, name, version, job_id)
            except KeyExistsError:
                version += 1  # another publisher took this number first
        raise VlkdError(f"could not take a version number for {kind}/{name} after {_MAX_CLAIM_ATTEMPTS} tries")

    def publish(
        self,
        kind: str,
        name: str,
        files: Mapping[str, Path],
        *,
        spec: BaseModel | Mapping[str, Any] | None = None,
        parents: Iterable[ArtifactRef | str] = (),
        metrics: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        cost: Mapping[str, float] | None = None,
        progress: Progress | None = None,
    ) -> Manifest:
        """Publish local files (artifact path -> local path) as the next version of `kind/name`."""
        pinned = [str(self.resolve(parent)) for parent in parents]  # fail before uploading anything
        with self.draft(kind, name, job_id) as draft:
            draft.add_files(files, progress)
            return draft.commit(spec=spec, parents=pinned, metrics=metrics, attributes=attributes, cost=cost)

    def publish_unless_unchanged(
        self,
        kind: str,
        name: str,
        files: Mapping[str, Path],
        *,
        spec: BaseModel | Mapping[str, Any] | None = None,
        parents: Iterable[ArtifactRef | str] = (),
        attributes: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> tuple[Manifest, bool]:
        """(the version, whether it is new): `publish`, unless the latest version has the same files (paths, sizes,
        sha256s), spec, parents and attributes; then that version. For imports (`vlkd artifacts push`, the synthetic
        dataset): importing the same data again must not make a version that everything made from it would count as
        a new input. Stage jobs publish every run: their outputs name the job that made them, which pipelines read."""
        pinned = [str(self.resolve(parent)) for parent in parents]
        described = _as_json([spec_dict(spec), pinned, dict(attributes or {})])
        if (same := self._same_as_latest(kind, name, files, described)) is not None:
            return same, False
        new = self.publish(kind, name, files, spec=spec, parents=pinned, attributes=attributes, progress=progress)
        return new, True

    def _same_as_latest(self, kind: str, name: str, files: Mapping[str, Path], described: list[Any]) -> Manifest | None:
        """The latest version if it holds `files` and is `described` as [spec, pinned parents, attributes] are."""
        try:
            latest = self.manifest(ArtifactRef(kind, name))
        except NotFoundError:
            return None
        if [latest.spec, latest.parents, latest.attributes] != described:
            return None
        stored = {f.path: f for f in latest.files}
        if {path: local.stat().st_size for path, local in files.items()} != {p: f.size for p, f in stored.items()}:
            return None  # the sizes differ: no need to read every file
        return latest if all(sha256_file(local) == stored[path].sha256 for path, local in files.items()) else None

    # -- reading ------------------------------------------------------------------------------------
    def versions(self, kind: str, name: str) -> list[int]:
        """Published versions, oldest first."""
        return [v for v in self.taken_versions(kind, name) if self.is_published(ArtifactRef(kind, name, v))]

    def aliases(self, kind: str, name: str) -> dict[str, int]:
        prefix = f"{self.name_prefix(kind, name)}/{ALIASES}"
        found = {}
        for child in self.storage.children(prefix):
            if child.endswith(".json"):
                found[child[: -len(".json")]] = json.loads(self.storage.read_bytes(f"{prefix}/{child}"))["version"]
        return found

    def resolve(self, ref: ArtifactRef | str) -> ArtifactRef:
        """The pinned version a ref names now; `NotFoundError` says what exists instead."""
        ref = ArtifactRef.parse(ref) if isinstance(ref, str) else ref
        if ref.pinned:
            if not self.is_published(ref):
                raise NotFoundError(f"{ref} does not exist; {self._what_exists(ref)}")
            return ref
        if ref.alias == LATEST:
            for version in reversed(self.taken_versions(ref.kind, ref.name)):
                if self.is_published(ref.at_version(version)):
                    return ref.at_version(version)
            raise NotFoundError(f"{ref.path} has no published version; {self._what_exists(ref)}")
        aliases = self.aliases(ref.kind, ref.name)
        if ref.alias not in aliases:
            known = ", ".join(sorted([LATEST, *aliases]))
            raise NotFoundError(f"{ref} does not exist; aliases of {ref.path}: {known}")
        return ref.at_version(aliases[ref.alias])

    def _what_exists(self, ref: ArtifactRef) -> str:
        versions = self.versions(ref.kind, ref.name)
        if versions:
            return "published versions: " + ", ".join(f"v{v}" for v in versions)
        names = self.names(ref.kind)
        if names:
            return f"{ref.kind} artifacts here: {', '.join(names)}"
        return f"the store {self.uri} holds no {ref.kind} artifacts"

    def manifest(self, ref: ArtifactRef | str) -> Manifest:
        """The manifest of the version `ref` names now; `DamagedManifestError` names a version whose manifest does
        not read as one."""
        pinned = self.resolve(ref)
        if pinned not in self._manifests:
            key = f"{self.version_prefix(pinned)}/{MANIFEST}"
            try:
                self._manifests[pinned] = Manifest.model_validate_json(self.storage.read_bytes(key))
            except ValidationError as exc:
                raise DamagedManifestError(
                    f"{pinned} is damaged: {self.uri}/{key} does not read as a manifest ({_first_problem(exc)}); "
                    f"restore that file, or delete {self.uri}/{self.version_prefix(pinned)}/ to drop the version"
                ) from None
        return self._manifests[pinned]

    def names(self, kind: str) -> list[str]:
        return self.storage.children(f"{ROOT}/{kind}")

    def list(self, kind: str | None = None) -> Listing:
        """Every artifact with at least one readable version (of one kind, or all). A latest version whose
        manifest is damaged is left out, and the one before it is the latest shown."""
        if kind is not None and kind not in KINDS:
            raise RefError(f"unknown artifact kind {kind!r}; available: {', '.join(KINDS)}")
        listing = Listing([], [])
        for k in [kind] if kind else [k for k in KINDS if k in self.storage.children(ROOT)]:
            for name in self.names(k):
                versions = self.versions(k, name)
                while versions:
                    try:
                        latest = self.manifest(ArtifactRef(k, name, versions[-1]))
                    except DamagedManifestError as exc:
                        listing.damaged.append(exc)
                        versions.pop()
                        continue
                    listing.artifacts.append(ArtifactSummary(k, name, versions, self.aliases(k, name), latest))
                    break
        return listing

    def fetch(
        self, ref: ArtifactRef | str, dest: Path, progress: Progress | None = None, overwrite: bool = False
    ) -> Manifest:
        """Download every file of `ref` into `dest`, each verified before it takes its final name.

        Files already in `dest` with the right size and sha256 are kept, so an interrupted fetch resumes. A local
        file that differs (edited there, or another artifact's file of the same name) is replaced only with
        `overwrite`; otherwise nothing is downloaded and the error names it."""
        manifest = self.manifest(ref)
        if dest.exists() and not dest.is_dir():
            raise VlkdError(f"{dest} is a file: give a folder to download {manifest.ref} into (a new one is made)")
        targets = [(entry, dest / check_file_path(entry.path)) for entry in manifest.files]
        kept = {entry.path for entry, target in targets if target.is_file() and _holds(target, entry)}
        if not overwrite:
            blocked = [(e, p) for e, target in targets if e.path not in kept and (p := _in_the_way(dest, target))]
            if blocked:
                (entry, path), more = blocked[0], f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
                raise VlkdError(
                    f"{path} is not {manifest.ref}'s {entry.path}{more} (edited here, or another artifact's): move it "
                    "away, or overwrite it with `vlkd artifacts get --force`"
                )
        for entry, target in targets:
            if entry.path in kept:
                if progress:
                    progress(entry.size)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.vlkd-part")
            try:
                self.storage.download(f"{self.version_prefix(manifest.ref)}/{FILES}/{entry.path}", part, progress)
                _verify(manifest.ref, entry, part)
                os.replace(part, target)
            finally:
                part.unlink(missing_ok=True)
        return manifest

    def lineage(self, ref: ArtifactRef | str) -> LineageNode:
        """The tree of parents; a parent that no longer exists, or whose manifest is damaged, appears with
        `manifest=None` (and `damaged` saying why). `ref`'s own manifest must read."""
        return self._lineage(str(self.manifest(ref).ref), frozenset())

    def _lineage(self, ref: str, seen: frozenset[str]) -> LineageNode:
        try:
            manifest = self.manifest(ref)
        except NotFoundError:
            return LineageNode(ref, None)
        except DamagedManifestError as exc:
            return LineageNode(ref, None, damaged=str(exc))
        if ref in seen:  # cannot happen with immutable versions, but a hand-edited store must not hang us
            return LineageNode(ref, manifest)
        parents = [self._lineage(p, seen | {ref}) for p in manifest.parents]
        return LineageNode(ref, manifest, parents)

    # -- aliases and housekeeping -------------------------------------------------------------------
    def tag(self, ref: ArtifactRef | str, alias: str) -> ArtifactRef:
        """Point `alias` at the version `ref` names now (moving it if it pointed elsewhere)."""
        check_alias(alias)
        if alias == LATEST:
            raise RefError("'latest' always means the newest published version and cannot be set by hand")
        pinned = self.resolve(ref)
        record = {"version": pinned.version, "tagged_at": now().isoformat()}
        key = f"{self.name_prefix(pinned.kind, pinned.name)}/{ALIASES}/{alias}.json"
        self.storage.write_bytes(key, json.dumps(record).encode())
        return pinned


def _first_problem(exc: ValidationError) -> str:
    """pydantic's first complaint, as `field: message`, and how many more there are."""
    problems = exc.errors()
    where = ".".join(str(part) for part in problems[0]["loc"])
    more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
    return f"{where + ': ' if where else ''}{problems[0]['msg']}{more}"


def _holds(local: Path, entry: FileEntry) -> bool:
    return local.stat().st_size == entry.size and sha256_file(local) == entry.sha256


def _in_the_way(dest: Path, target: Path) -> Path | None:
    """What already takes the place of `target` (not holding its bytes) or of a folder on its way from `dest`."""
    parts = target.relative_to(dest).parts
    for depth in range(1, len(parts)):
        folder = dest.joinpath(*parts[:depth])
        if folder.exists() and not folder.is_dir():
            return folder
    return target if target.exists() else None


def _verify(ref: ArtifactRef, entry: FileEntry, local: Path) -> None:
    size = local.stat().st_size
    digest = sha256_file(local)
    if size != entry.size or digest != entry.sha256:
        raise ChecksumError(
            f"{ref} file {entry.path!r} is corrupt in the store: expected {entry.size} bytes with sha256 "
            f"{entry.sha256[:12]}..., got {size} bytes with sha256 {digest[:12]}...; re-publish it"
        )
