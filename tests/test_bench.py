"""The benchmarks that make claims about GPUs refuse to make them without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs for minutes")
def test_the_gpu_script_refuses_to_run_without_a_cuda_device_and_says_so():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("bench/gpu.sh needs a CUDA GPU; this machine has none")
    assert "==" not in result.stdout  # no benchmark started on the CPU
