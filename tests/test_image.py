"""The Dockerfile, .dockerignore and image-requirements.txt, read as text (no Docker engine needed).

The image is the official Ray image of the pinned Ray version, named by digest; it takes away the passwordless sudo
that image gives its user and runs as that user; every package it installs is pinned (by hash where the index is
PyPI); it bakes in no credentials. tests/test_checkov.py scans the Dockerfile with checkov's policies.
"""

from __future__ import annotations

import re
import shlex
from fnmatch import fnmatch
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = "image-requirements.txt"
# Options of `pip install` that take a value, so that the value is not read as a requirement.
PIP_VALUED_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def pip_installs() -> list[list[str]]:
    """The arguments after `pip install` of every pip install the Dockerfile runs."""
    commands = [shlex.split(c) for op, args in dockerfile() if op == "RUN" for c in re.split(r"&&|;", args)]
    return [c[2:] for c in commands if c[:2] == ["pip", "install"]]


def requirements_and_options(arguments: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    requirements, options, pending = [], {}, None
    for argument in arguments:
        if pending:
            options[pending], pending = argument, None
        elif argument in PIP_VALUED_OPTIONS:
            pending = argument
        elif argument.startswith("-"):
            options[argument] = True
        else:
            requirements.append(argument)
    return requirements, options


def pinned_requirements() -> dict[str, tuple[str, list[str]]]:
    """image-requirements.txt: {name: (version, hashes)}; every entry must be `name==version --hash=...`."""
    text = re.sub(r"\\\n", " ", (ROOT / REQUIREMENTS).read_text())
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)\s*", line)
        assert match, f"{REQUIREMENTS}: not `name==version --hash=sha256:...`: {line}"
        entries[canonicalize_name(match[1])] = (match[2], re.findall(r"sha256:[0-9a-f]{64}", match[3]))
    return entries


def project_dependencies() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in pyproject["project"]["dependencies"]]


def test_the_image_is_built_on_the_official_ray_image_of_the_pinned_version_by_digest():
    (ray,) = [r for r in project_dependencies() if r.name == "ray"]
    version = str(ray.specifier).removeprefix("==")
    (base,) = [args for op, args in dockerfile() if op == "FROM"]
    match = re.fullmatch(rf"rayproject/ray:{re.escape(version)}-py311-cu\d{{3}}@(\S+)", base)
    assert match, f"FROM {base}: not rayproject/ray:{version}-py311-cuNNN@<digest>"
    digest = match[1]
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):  # else a build argument, given at build time: no default
        arg = re.fullmatch(r"\$\{?(\w+)\}?", digest)
        assert arg, f"FROM {base}: the digest is neither sha256:<64 hex> nor a build argument"
        declared = [args for op, args in dockerfile()[: dockerfile().index(("FROM", base))] if op == "ARG"]
        assert arg[1] in declared, f"ARG {arg[1]} (with no default) must come before FROM"


def test_the_image_takes_away_the_passwordless_sudo_of_the_ray_user():
    instructions = dockerfile()
    user, removed = None, []
    for op, args in instructions:
        if op == "USER":
            user = args
        elif op == "RUN" and user == "root":
            removed += [step.strip() for step in args.split("&&")]
    assert any(re.fullmatch(r"sed -i '/NOPASSWD/d' /etc/sudoers", step) for step in removed), removed
    assert "rm -f /etc/sudoers.d/*" in removed
    assert "gpasswd --delete ray sudo" in removed  # the base image's `usermod -aG sudo ray`


def test_the_image_runs_as_a_non_root_user():
    users = [args for op, args in dockerfile() if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")


def test_the_image_bakes_in_no_credentials():
    secret_name = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
    for op, args in dockerfile():
        if op in ("ENV", "ARG"):
            assert not secret_name.search(args), f"{op} {args}"
        if op in ("COPY", "ADD"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            assert not any(re.search(r"\.aws|\.kube|\.env|credential|secret|\.pem|id_rsa", s) for s in sources)


def test_every_pip_install_of_the_image_is_pinned():
    installs = pip_installs()
    assert len(installs) >= 3  # the pinned requirements, torch, vlkd
    for arguments in installs:
        requirements, options = requirements_and_options(arguments)
        if options.get("-r") == REQUIREMENTS:  # by version and hash, and nothing it does not list
            assert options.get("--require-hashes") and options.get("--no-deps"), arguments
        elif requirements == ["."]:  # vlkd: its dependencies are in the pinned requirements
            assert options.get("--no-deps") and options.get("--no-build-isolation"), arguments
        else:
            assert requirements and all(re.fullmatch(r"[A-Za-z0-9._-]+==\S+", r) for r in requirements), arguments
            assert not {"-r", "-c", "--requirement", "--constraint"} & options.keys(), arguments
    assert (ROOT / REQUIREMENTS).exists()
    copied = [args.split()[-2] for op, args in dockerfile() if op == "COPY"]
    assert REQUIREMENTS in copied


def test_the_pinned_requirements_hold_every_dependency_of_vlkd_but_torch_and_its_cuda_libraries():
    pinned = pinned_requirements()
    needed = {canonicalize_name(r.name) for r in project_dependencies()} - {"torch"}
    assert needed <= pinned.keys(), f"missing from {REQUIREMENTS}: {sorted(needed - pinned.keys())}"
    for requirement in project_dependencies():
        if requirement.name != "torch":
            assert requirement.specifier.contains(pinned[canonicalize_name(requirement.name)][0]), requirement
    from_pytorch = [n for n in pinned if n == "torch" or n == "triton" or n.startswith(("nvidia-", "cuda-"))]
    assert from_pytorch == []  # torch's CUDA build pins these itself


def test_the_images_torch_is_the_version_the_tests_run():
    (tested,) = re.findall(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    torches = [
        r for arguments in pip_installs() for r in requirements_and_options(arguments)[0] if r.startswith("torch")
    ]
    (torch,) = torches
    assert re.fullmatch(rf"torch=={re.escape(tested)}\+cu\d{{3}}", torch), torch  # the CUDA build of that version
    (allowed,) = [r for r in project_dependencies() if r.name == "torch"]
    assert allowed.specifier.contains(tested)


def test_vlkd_is_installed_from_the_source_tree_not_editable():
    installs = [args for op, args in dockerfile() if op == "RUN" and re.search(r"pip install\b.* \.(\s|&|$)", args)]
    assert installs and not any(re.search(r"\s(-e|--editable)\b", args) for args in installs)
    assert not any("[dev]" in args for op, args in dockerfile())


def test_dockerignore_sends_only_the_sources():
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]

    def excluded(path: str) -> bool:
        verdict = False
        for rule in rules:  # the last matching rule wins, as in Docker
            negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if fnmatch(path, pattern) or fnmatch(path, pattern.removeprefix("**/")) or path.startswith(pattern + "/"):
                verdict = not negated
        return verdict

    for path in (".git", ".venv", ".pytest_cache", ".ruff_cache", "build", "dist", "data", "tests", ".env", "s3.env"):
        assert excluded(path), path
    for path in (
        REQUIREMENTS,
        "pyproject.toml",
        "README.md",
        "lib/vlkd/storage/s3.py",
        "cli/main.py",
        "jobs/teacher.py",
    ):
        assert not excluded(path), path
    assert excluded("lib/vlkd/__pycache__")
