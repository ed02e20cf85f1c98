#!/usr/bin/env bash
# Create .venv/ in the project root and install speechattn (editable) with its dev extras.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "$(date '+%F %T') creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.speechattn-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "$(date '+%F %T') installing speechattn and its dependencies into .venv (torch is a few GB the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
echo "$(date '+%F %T') .venv ready: $(.venv/bin/python -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
