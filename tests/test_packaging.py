"""`pip install .` (not only editable) must ship every module: the Docker image installs it that way."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# Source folder -> the package it becomes (pyproject's package-dir).
SOURCES = {"lib/vlkd": "vlkd", "cli": "vlkd/cli", "jobs": "vlkd/jobs"}


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("vlkd-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{package}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, package in SOURCES.items()
        for path in (ROOT / folder).rglob("*.py")
    }
    assert expected - shipped == set()
    entry_points = next(n for n in shipped if n.endswith("entry_points.txt"))
    assert "vlkd = vlkd.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
