#!/usr/bin/env bash
# Create or repair .venv/ in the project root from requirements.lock, then install speechattn (editable).
#
#   tools/setup_venv.sh          # first run: a few minutes (torch is a few GB); afterwards: seconds
#
# Nothing is re-resolved: every package comes at the exact version (and hash) in requirements.lock, then the
# project itself is installed without dependencies. The environment is checked after every install and on
# every run (tools/check_env.py: locked versions, torchaudio's compiled extension, soundfile, kaldiio,
# hydra); a .venv that fails the check (interrupted install, a package replaced by hand) is repaired, and if
# it still fails the script says what failed and exits non-zero. It never reports "ready" otherwise.
# To change a dependency: edit pyproject.toml, then tools/update_lock.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
lock=requirements.lock
venv=.venv
log() { echo "$(date '+%F %T') setup_venv: $*"; }
die() { echo "$(date '+%F %T') setup_venv: ERROR: $*" >&2; exit 1; }

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
[ -f "$lock" ] || die "$root/$lock is missing (generate it with tools/update_lock.sh)"

# The venv's interpreter must run and be Python 3.11 (the lock is resolved for 3.11).
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null ||
    die "Python 3.11 is required: '$python' is $("$python" --version 2>&1); set PYTHON=/path/to/python3.11"
  if [ -e "$venv" ]; then log "$venv does not run Python 3.11: recreating it"; rm -rf "$venv"; fi
  log "creating $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi

# The stamp holds the hash of the lock and pyproject.toml of the last complete, checked install.
want="$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)"
stamp="$venv/.speechattn-lock-sha"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$venv/bin/python" tools/check_env.py --quiet; then
  log ".venv ready: $("$venv/bin/python" -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
  exit 0
fi
rm -f "$stamp"

pip() {  # quiet pip; drops the warning some machines' pip.conf (find-links to absent folders) prints per package
  "$venv/bin/python" -m pip --disable-pip-version-check "$@" --quiet 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
install_locked() {  # $@: extra pip options
  log "installing the locked packages ($(grep -c '==' "$lock") pins in $lock; torch is a few GB the first time)"
  pip install --require-hashes --no-deps --no-cache-dir "$@" -r "$lock" ||
    die "pip could not install $lock (network or disk?). Rerun tools/setup_venv.sh to continue; rm -rf .venv to start over"
  # The project itself: no dependencies (all locked above), no build isolation (setuptools is locked too).
  pip install --no-deps --no-build-isolation -e . ||
    die "pip could not install speechattn itself (see above)"
}

# A first install (torch not yet in the venv) needs ~7 GB at its peak: ~5.5 GB of packages in the venv and the
# downloaded wheels in pip's temporary dir (measured on a fresh clone: 7.1 GB at the peak, 5.5 GB after).
# pip's cache is off (--no-cache-dir below), or it would keep another ~3 GB of wheels. Check before pip
# starts, so a full disk is one clear line instead of pip's "[Errno 28]" halfway through.
free_gb() { df -Pk "$1" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
check_free_space() {
  local need="${SPEECHATTN_VENV_FREE_GB:-8}" tmp="${TMPDIR:-/tmp}" venv_need tmp_need
  venv_need=$(( need * 6 / 8 )); tmp_need=$(( need - venv_need ))
  if [ "$(stat -c %d "$venv")" = "$(stat -c %d "$tmp")" ]; then venv_need=$need; tmp_need=0; fi
  [ "$(free_gb "$venv")" -ge "$venv_need" ] ||
    die "$root/$venv has $(free_gb "$venv") GB free; the first install needs about $venv_need GB there (torch is a few GB): free some space and rerun"
  [ "$tmp_need" -eq 0 ] || [ "$(free_gb "$tmp")" -ge "$tmp_need" ] ||
    die "pip's temporary dir $tmp has $(free_gb "$tmp") GB free; the first install needs about $tmp_need GB there: free some space or set TMPDIR, and rerun"
}
"$venv/bin/python" -c 'import torch' 2>/dev/null || check_free_space

install_locked
if ! "$venv/bin/python" tools/check_env.py --quiet; then
  log "the environment check failed after installing: reinstalling every locked package (--force-reinstall)"
  install_locked --force-reinstall
  "$venv/bin/python" tools/check_env.py --quiet ||
    die "the environment is still broken after a full reinstall (failures above). rm -rf .venv and rerun; if it persists, the lock itself is wrong: tools/update_lock.sh"
fi
echo "$want" > "$stamp"
"$venv/bin/python" tools/check_env.py
log ".venv ready: $("$venv/bin/python" -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
