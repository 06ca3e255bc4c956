"""Pipeline specs that ship with vlkd (`vlkd quickstart` runs them): `tiny.yaml`, `small.yaml`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SCALES = ("tiny", "small")
# Videos of the synthetic dataset each scale is sized for.
VIDEOS = {"tiny": 256, "small": 512}


def pipeline_file(scale: str) -> Path:
    return Path(str(resources.files(__name__) / f"{scale}.yaml"))
