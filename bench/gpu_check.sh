#!/usr/bin/env bash
# Device check of the GPU path (issue #12): a table of five steps, exit status 1 if any check fails.
#   a  attention engines (flex, varlen, blockwise) vs the dense reference, fp32/bf16, outputs and gradients
#   b  encoder forward+backward time and peak memory, T = 4k..360k frames, truncated vs dense vs full SDPA
#   c  one epoch of the speechocean762 phone recipe on the GPU (bf16, fused engine) vs the CPU reference
#   d  torchrun --nproc_per_node=2 DDP with NCCL (skipped with fewer than 2 GPUs)
#   e  speechattn-infer on a 1-hour recording on the GPU, labels identical to CPU fp32 inference
#
# Usage: bench/gpu_check.sh [--cpu] [--steps abcde] [--work-dir DIR] [--corpus-dir DIR]
#   --cpu   dry run: the same steps at tiny sizes on CPU (tests/test_gpu_path.py runs it)
# Needs the repository's .venv (tools/setup_venv.sh) and ../shared; installs nothing. Under 8 minutes on
# one GPU (step c reuses recipes/speechocean762/phone/data when stages 0-2 were run there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "gpu_check: $root/.venv is missing: run tools/setup_venv.sh first (this script installs nothing)" >&2
  exit 1
fi
export PATH="$root/.venv/bin:$PATH"
exec "$python" "$root/bench/gpu_check.py" "$@"
