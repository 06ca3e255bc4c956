# The two commands of the README: `make quickstart` sets up and runs the whole method on this machine, `make test`
# sets up and runs the checks CI runs (.ci/run calls it). Both create .venv, or reuse it while pyproject.toml is
# unchanged, and install torch before the project so that pip never picks a torch for it.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0 from PyPI: the CUDA build on a Linux machine with an NVIDIA GPU, a CPU build where the machine's pip
# configuration provides one (this repository's CI machine). For the smaller CPU-only build from PyTorch's own
# index on any machine: make TORCH_INDEX=https://download.pytorch.org/whl/cpu ...
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
# checkov (tests/test_checkov.py) pins boto3, botocore and packaging older than the project's, so it has a venv of
# its own inside .venv (removed with it, ignored by git), and its command is linked into .venv/bin.
CHECKOV ?= checkov==3.3.30
CHECKOV_VENV := $(VENV)/checkov
# What activating .venv does: the jobs and tools the tests start (ray, kubectl plugins, vlkd) come from it too.
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)

.PHONY: quickstart test setup
quickstart: $(VENV)/.installed
	$(BIN)/vlkd quickstart

# Three test processes on two cores: most of a test's time is spent waiting on jobs, Ray and S3, not computing.
# A file's tests share a process (`--dist loadfile`), so its module fixtures are made once; files go out in the
# order tests/conftest.py gives them (the longest first), not xdist's (the most tests first).
TEST_WORKERS ?= 3
test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

setup: $(VENV)/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(CHECKOV_VENV)/.installed: Makefile | $(VENV)/.installed
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet "$(CHECKOV)"
	ln -sf ../checkov/bin/checkov $(BIN)/checkov
	touch $@
