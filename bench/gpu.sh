#!/usr/bin/env bash
# The GPU paths, measured in one device call of at most 8 minutes (issue 34), most important first:
#   1. the whole optimizer step at batch 128, bf16 + fused AdamW, eager and compiled, teacher and student: s/step,
#      tokens/s, MFU counted (6 x parameters x tokens) and achieved (the FLOPs the step runs, `vlkd.flops`);
#   2. a real teacher and a real distill stage job through `vlkd submit --backend local` at 12L/768H, their
#      tokens/s and MFU read from the jobs' own metrics (`bench.stage_jobs`);
#   3. the MLM head at the masked positions against every position, same run (`train_step`, `kd_step`);
#   4. the teacher's input path against its step (`input_path`);
#   5. NVDEC (PyAV's CUDA decoder) against CPU decode, both through preprocess's own decode (`decode`);
#   6. the compiled step at batch 32, without and with CUDA graphs (`train.compile: reduce-overhead`), and at 256;
#   7. preprocess throughput with the paper's encoders at random init.
# Each part gets at most its own budget and what is left of the whole (BUDGET seconds, 450 by default, leaving
# the call's setup its share of 8 minutes); a part that does not fit is reported as skipped, not started.
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
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader || true

BUDGET=${BUDGET:-450}
deadline=$((SECONDS + BUDGET))

# run SECONDS MODULE ARGS...: python -m bench.MODULE under min(SECONDS, what is left); a part that fails or runs
# out of time is reported and the next one runs.
run() {
  local budget=$1 left=$((deadline - SECONDS))
  shift
  echo
  if ((left < 20)); then
    echo "== python -m bench.$* : skipped, ${left} s left of ${BUDGET}"
    return
  fi
  ((budget > left)) && budget=$left
  echo "== python -m bench.$* (at most ${budget} s)"
  local start=$SECONDS
  timeout "$budget" python -m "bench.$@" || echo "(exit $?: failed or out of time)"
  echo "-- $((SECONDS - start)) s"
}

run 170 gpu_paths --presets bert-12l-768h --batch 128 --forms bf16+fused bf16+fused+compile --repeats 10
run 150 stage_jobs --preset bert-12l-768h --batch 128 --steps 120 --videos 128
run 45 train_step --presets bert-12l-768h --batch 128 --seq 128 --repeats 3
run 45 kd_step --presets bert-12l-768h --batch 128 --seq 128 --rounds 2
run 40 input_path --presets bert-12l-768h --batch 128 --seq 128 --batches 20 --cpus "$(nproc)"
run 50 decode --videos 4 --seconds 10 --width 1280 --height 720
run 150 gpu_paths --presets bert-12l-768h --batch 32 --forms bf16+fused+compile bf16+fused+cudagraphs --repeats 10
run 90 gpu_paths --presets bert-12l-768h --batch 256 --forms bf16+fused+compile --repeats 10
run 60 preprocess --videos 8 --size-2d 224 --size-3d 112 --encoder-2d clip-vit-b32 --depth-3d 101
echo
echo "gpu.sh: $SECONDS s in all"
