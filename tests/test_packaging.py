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


def test_every_package_the_code_imports_is_declared():
    """An import that works only because another package happened to pull its distribution in breaks when that
    package stops depending on it."""
    import ast
    import importlib.metadata
    import re

    import tomllib

    modules = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"vlkd", "__future__"}
    distributions = importlib.metadata.packages_distributions()

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {normal(re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0]) for req in project["dependencies"]}
    undeclared = {m for m in third_party if not {normal(d) for d in distributions.get(m, [m])} & declared}
    assert undeclared == set()
