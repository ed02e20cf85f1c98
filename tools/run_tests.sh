#!/usr/bin/env bash
# Set up .venv (tools/setup_venv.sh) and run the test suite. Extra arguments go to pytest, e.g.
#   tools/run_tests.sh -k attention
# Tests that need the corpora in ../shared skip with a message when it is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/setup_venv.sh"
cd "$root"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q "$@"
