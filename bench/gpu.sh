#!/usr/bin/env bash
# The GPU paths, measured: the teacher's and the student's training steps (bf16 autocast, SDPA attention), tokens/s
# and MFU against the device's dense bf16 peak; the whole optimizer step in fp32, bf16, bf16 + fused AdamW and
# bf16 + fused AdamW + torch.compile; the input path against the step; preprocess throughput in videos/s with the
# paper's encoders at random init.
# Refuses to run without a CUDA device: CPU numbers are not GPU numbers.
#
#   bash bench/gpu.sh            # from the repository root, in the project's environment
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    print(f"bench/gpu.sh needs a CUDA GPU; this machine has none (torch {torch.__version__}, "
          f"CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU node; CPU benchmarks are python -m bench.<name>.",
          file=sys.stderr)
    sys.exit(1)
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
  exit 1
fi

run() { echo; echo "== python -m bench.$*"; timeout 300 python -m "bench.$@"; }

run train_step --presets bert-6l-512h bert-12l-768h --batch 32 --seq 128 --repeats 10
run kd_step --presets bert-6l-512h bert-12l-768h --batch 32 --seq 128
run gpu_paths --presets bert-12l-768h --batch 32 --seq 128 --frames 16 --repeats 20
run input_path --presets bert-12l-768h --batch 32 --seq 128 --cpus "$(nproc)"
run preprocess --videos 8 --size-2d 224 --size-3d 112 --encoder-2d clip-vit-b32 --depth-3d 101
