#!/usr/bin/env bash
# Put the project's .venv (created by tools/setup_venv.sh) first on PATH, like Kaldi's path.sh.
_sa_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_sa_root/.venv/bin/python" ]; then
  export PATH="$_sa_root/.venv/bin:$PATH"
elif ! command -v speechattn-train >/dev/null 2>&1; then
  echo "speechattn is not installed: run $_sa_root/tools/setup_venv.sh first" >&2
  exit 1
fi
export PYTHONUNBUFFERED=1
# 2-core machines: 1 intra-op thread per process unless a stage asks for more (see bench/README.md).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export SPEECHATTN_ROOT="$_sa_root"
