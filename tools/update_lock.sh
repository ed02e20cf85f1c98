#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml, reinstall .venv from it, and run the tests.
#
#   tools/update_lock.sh                # after editing pyproject.toml: keeps every pin that still fits
#   tools/update_lock.sh --upgrade      # newest versions that fit pyproject.toml (torch/torchaudio stay pinned)
#   tools/update_lock.sh --no-tests     # lock and install only
#
# The resolver is uv (`uv pip compile`, one exact version pinned below, installed into .venv-lock/): a
# universal lock for Python 3.11 with the sha256 of every file on PyPI, so pip installs exactly these
# files (`--require-hashes`) on any machine. The lock covers the runtime dependencies, the `dev` extra
# (tests, benchmark references) and the build backend (setuptools, wheel) that installs the project
# without re-resolving anything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
uv_version=0.13.9
upgrade=(); run_tests=true
for arg in "$@"; do
  case "$arg" in
    --upgrade) upgrade=(--upgrade) ;;
    --no-tests) run_tests=false ;;
    *) echo "update_lock.sh: unknown option '$arg' (--upgrade, --no-tests)" >&2; exit 2 ;;
  esac
done
log() { echo "$(date '+%F %T') update_lock: $*"; }

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if ! .venv-lock/bin/uv --version 2>/dev/null | grep -q "^uv $uv_version"; then
  log "installing uv $uv_version into .venv-lock/"
  rm -rf .venv-lock
  "$python" -m venv .venv-lock
  .venv-lock/bin/python -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
fi

# The build backend, read from pyproject.toml, is locked as well (setup installs with --no-build-isolation).
build_reqs="$(mktemp --suffix=.in)"
trap 'rm -f "$build_reqs"' EXIT
.venv-lock/bin/python -c '
import sys, tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' > "$build_reqs"

log "resolving pyproject.toml (+ dev extra, build backend) -> requirements.lock"
.venv-lock/bin/uv pip compile pyproject.toml "$build_reqs" --extra dev --universal --python-version 3.11 \
  --generate-hashes --index-url https://pypi.org/simple --custom-compile-command "tools/update_lock.sh" \
  --no-annotate --quiet "${upgrade[@]}" -o requirements.lock
sed -i "s#$build_reqs#pyproject.toml [build-system]#g" requirements.lock
log "requirements.lock: $(grep -c '==' requirements.lock) pinned packages"

tools/setup_venv.sh
if [ "$run_tests" = true ]; then
  log "running the tests with the new lock"
  tools/run_tests.sh
fi
