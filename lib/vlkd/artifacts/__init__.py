"""Versioned, immutable artifacts with manifests and lineage, on any `Storage`.

Layout under the store root::

    artifacts/<kind>/<name>/v<N>/claim.json       who took version N, and when
    artifacts/<kind>/<name>/v<N>/files/<path>     the data
    artifacts/<kind>/<name>/v<N>/manifest.json    written last: its presence is what publishes vN
    artifacts/<kind>/<name>/aliases/<alias>.json  {"version": N}

Guarantees:
- A version number is taken by an exclusive create of its `claim.json` (`If-None-Match: *` on S3, `link` on
  files), so two concurrent publishers of one name never share a number: the loser moves on to N+1.
- Readers only see versions whose manifest exists, and the manifest is written after every file, so a
  crashed or interrupted publish is invisible; `gc` removes its leftovers.
- `latest` is not stored: it is the highest published version, so concurrent publishers cannot leave it
  pointing backwards.
- Downloads are checked against the manifest's size and sha256 before they appear under their final name, and
  never replace a local file that differs unless asked.
- A manifest that exists but does not read as one (empty, cut short, not a manifest) is an error naming its
  version where that version is asked for, and a version left out (and named) where versions are listed.

`vlkd.housekeeping` finds what `vlkd artifacts gc` removes.

Modules: `manifest` (what a version records; the layout's names), `draft` (publishing one version), `store`
(`ArtifactStore`).
"""

from vlkd.artifacts.draft import Draft
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
    collect_files,
    sha256_file,
)
from vlkd.artifacts.store import ArtifactStore

__all__ = [
    "ALIASES",
    "CLAIM",
    "FILES",
    "MANIFEST",
    "ROOT",
    "ArtifactStore",
    "ArtifactSummary",
    "Draft",
    "FileEntry",
    "LineageNode",
    "Listing",
    "Manifest",
    "check_file_path",
    "collect_files",
    "sha256_file",
]
