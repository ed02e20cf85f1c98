#!/usr/bin/env bash
# Stage bookkeeping for recipes: the one way a recipe decides that a piece of work is done.
#
# Every unit of work (one stage for one data set or one experiment) writes a stamp file beside its output,
# e.g. exp/mlp_context/.stage.train. The stamp records what the output was made from:
#   unit:    the unit's name                 (stage 3 train exp/mlp_context)
#   command: the command line                (without speed-only settings: nj=, threads=, progress=, --nj)
#   file:    a hash of each configuration file or script it reads: the Hydra configs the command selects
#            (speechattn/conf/<config>.yaml and one file per config group), local/*.py named on it
#   input:   a hash of each upstream stamp   (data/train/.stage.features ...)
#   finished: when it finished
# A unit is skipped when its stamp exists and every line but `finished` is what the unit would write now.
# Changing an option changes a command line; redoing an upstream unit changes its `finished` line and so
# the hash every downstream unit recorded: exactly the units that depend on a change are redone, and no
# output is ever older than what it was made from. Deleting an output directory deletes its stamp.
#
# While a unit runs, its stamp is `<stamp>.started` (same lines, no `finished`). A re-run finding a
# `.started` stamp of the same configuration resumes (the tool continues where it stopped: training
# from checkpoints/last.pt); any other unfinished or foreign output is redone from scratch (--force-arg
# is passed, or the --clean directory removed first).
#
# Code (speechattn/*.py) is not hashed: after changing the code, redo with --force true.
#
#   stage_unit NAME STAMP [--after "STAMP ..."] [--hydra CONFIG] [--files "PATH ..."] [--force-arg ARG]
#              [--clean DIR] [--out FILE] -- COMMAND...
# With dry_run=true (the recipes' --dry-run) a unit that would run only logs its command: nothing is run,
# removed or stamped; the units downstream of it say they would be redone too.
# --hydra CONFIG: COMMAND is a speechattn Hydra app whose primary config is CONFIG (unless the command
# says --config-name); the configs it selects are hashed.
# Needs: log (utils/log.sh), $force, $parallel, $root; optional $dry_run.

# Skip-or-run helper: `stage_wanted N` is true when N is within [--stage, --stop-stage].
_stage_dry_pending=" "  # dry run: the stamps of the units that would have run, space-separated
stage_wanted() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# The command as recorded: words that change only the speed of the work are left out, and the project
# root is written as $root so a moved checkout does not redo everything.
_stage_command_text() {
  local words=() skip=false w
  for w in "$@"; do
    if [ "$skip" = true ]; then skip=false; continue; fi
    case "$w" in
      --nj) skip=true; continue ;;
      nj=*|workers=*|threads=*|trainer.threads=*|progress=*) continue ;;
    esac
    words+=("${w//$root/\$root}")
  done
  echo "${words[*]}"
}

# "sha1  path" of a file, of every file under a directory, or "missing  path".
_stage_hash() {
  local p="$1" h
  if [ -f "$p" ]; then h="$(sha1sum < "$p")"
  elif [ -d "$p" ]; then h="$(find "$p" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z |
                             xargs -0 -r sha1sum | sed "s#  $p#  #" | sha1sum)"
  else h="missing"; fi
  echo "${h%% *}  ${p//$root/\$root}"
}

# The Hydra config files a command reads: its primary config (--config-name, else $1) and, for each config
# group, the option it selects (group=option on the command line, else the primary config's defaults list).
_stage_hydra_files() {
  local conf="$root/speechattn/conf" name="$1" w prev="" g opt; shift
  for w in "$@"; do [ "$prev" != --config-name ] || name="$w"; prev="$w"; done
  echo "$conf/$name.yaml"
  for g in "$conf"/*/; do
    g="$(basename "$g")"; opt=""
    for w in "$@"; do case "$w" in "$g="*) opt="${w#*=}" ;; esac; done
    [ -n "$opt" ] || opt="$(sed -n "s/^ *- *$g: *\([A-Za-z0-9_]*\).*/\1/p" "$conf/$name.yaml" | head -1)"
    if [ -n "$opt" ]; then echo "$conf/$g/$opt.yaml"; fi
  done
}

# The signature lines of a unit (the stamp without its `finished` line).
_stage_signature() {
  local name="$1" after="$2" files="$3" hydra="$4"; shift 4
  local p
  echo "unit: $name"
  echo "command: $(_stage_command_text "$@")"
  for p in "$@"; do  # scripts named on the command line (python local/prepare_*.py ...)
    case "$p" in "$root"/*) [ -f "$p" ] && echo "file: $(_stage_hash "$p")" ;; esac
  done
  if [ -n "$hydra" ]; then files="$(_stage_hydra_files "$hydra" "$@") $files"; fi
  for p in $files; do echo "file: $(_stage_hash "$p")"; done
  for p in $after; do echo "input: $(_stage_hash "$p")"; done
}

# What differs between an old and a new signature, in words: the first new line the old one lacks.
_stage_change() {
  local line
  while IFS= read -r line; do
    if ! grep -Fxq -- "$line" <<< "$1"; then echo "now '$line'"; return 0; fi
  done <<< "$2"
  while IFS= read -r line; do
    if ! grep -Fxq -- "$line" <<< "$2"; then echo "no longer '$line'"; return 0; fi
  done <<< "$1"
}

# Writes the `.started` stamp of a unit about to run (SIG: its signature).
stage_started() { mkdir -p "$(dirname "$1")"; rm -f "$1"; echo "$2" > "$1.started"; }
# Turns the `.started` stamp into the finished stamp.
stage_finished() {
  { echo "$2"; echo "finished: $(date '+%Y-%m-%d %H:%M:%S.%N')"; } > "$1.tmp"
  mv "$1.tmp" "$1"
  rm -f "$1.started"
}

stage_unit() {
  local name="$1" stamp="$2"; shift 2
  local after="" files="" hydra="" force_arg="" clean="" out="" check_only=false
  while [ $# -gt 0 ]; do
    case "$1" in
      --after) after="$2"; shift 2 ;;
      --files) files="$2"; shift 2 ;;
      --hydra) hydra="$2"; shift 2 ;;
      --force-arg) force_arg="$2"; shift 2 ;;
      --clean) clean="$2"; shift 2 ;;
      --out) out="$2"; shift 2 ;;
      # Only decide: status 0 (and a log line) when the unit is up to date, else 1 with its signature in
      # $stage_sig and the reason in $stage_why, for a caller that runs several units in one command.
      --check-only) check_only=true; shift ;;
      --) shift; break ;;
      *) log "ERROR: stage_unit $name: unknown argument '$1'"; exit 1 ;;
    esac
  done
  local sig old="" why redo=true
  sig="$(_stage_signature "$name" "$after" "$files" "$hydra" "$@")"
  [ -f "$stamp" ] && old="$(grep -v '^finished: ' "$stamp" || true)"
  local p pending=""
  for p in $after; do [[ "$_stage_dry_pending" != *" $p "* ]] || pending="$p"; done
  if [ "$force" = true ]; then
    why="--force true: redoing"
  elif [ -n "$pending" ] && [ -n "$old" ]; then  # dry run: an upstream unit would be redone, so would this one
    why="redoing: $pending would be redone"
  elif [ -n "$old" ] && [ "$old" = "$sig" ]; then
    log "$name: up to date, skipped ($stamp)"
    return 0
  elif [ -n "$old" ]; then
    why="redoing: $(_stage_change "$old" "$sig")"
  elif [ -f "$stamp.started" ] && [ "$(cat "$stamp.started")" = "$sig" ]; then
    why="resuming an interrupted run of the same configuration"; redo=false
  elif [ -f "$stamp.started" ]; then
    why="redoing: an interrupted run of another configuration is in the way"
  else
    why="running"
  fi
  if [ "$check_only" = true ]; then stage_sig="$sig"; stage_why="$why"; return 1; fi
  local cmd=("$@")
  if [ "$redo" = true ]; then
    if [ -n "$force_arg" ]; then cmd+=("$force_arg"); fi
  fi
  if [ "${dry_run:-false}" = true ]; then  # --dry-run true: say what would run; nothing removed or written
    log "$name: $why; dry run, would run: ${cmd[*]}"
    _stage_dry_pending+="$stamp "
    return 0
  fi
  if [ "$redo" = true ] && [ -n "$clean" ]; then rm -rf "$clean"; fi
  stage_started "$stamp" "$sig"
  log "$name: $why${out:+ (output: $out)}"
  local rc=0 start=$SECONDS
  if [ -z "$out" ]; then
    "${cmd[@]}" || rc=$?
  else
    mkdir -p "$(dirname "$out")"
    if [ "$parallel" = true ]; then "${cmd[@]}" >> "$out" 2>&1 || rc=$?
    else "${cmd[@]}" 2>&1 | tee -a "$out" >&2 || rc=$?; fi
  fi
  if [ "$rc" -ne 0 ]; then stage_failed "$name" "$rc" "$out" "${cmd[@]}"; fi
  stage_finished "$stamp" "$sig"
  log "$name: done in $((SECONDS - start)) s"
}

# The one-line error of a failed unit (NAME, exit status, output file or "", command), then exit 1.
stage_failed() {
  local name="$1" rc="$2" out="$3" last=""; shift 3
  [ -n "$out" ] && last="$(grep -v '^[[:space:]]*$' "$out" | tail -n 1 | tr -d '\r' | cut -c1-300 || true)"
  log "ERROR: $name failed (exit $rc): $(_stage_command_text "$@")${last:+; last output: $last}${out:+; full output: $out}"
  exit 1
}

# The process ID and every descendant of it get SIGTERM (children first, so none is re-parented and missed).
_terminate_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do _terminate_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}

# side_by_side "NAMES" COMMAND...: runs "COMMAND... NAME" for every name at once and waits for all of them;
# each unit logs its own one-line error, and the caller fails (exit 1) after all have finished. Interrupted
# (Ctrl-C, SIGTERM), it stops every unit it started and their processes before exiting: a non-interactive
# shell starts background jobs with SIGINT ignored, so without this a Ctrl-C left the trainings running.
side_by_side() {
  local names="$1" name pid failed=0; shift
  _side_pids=()
  trap 'log "interrupted: stopping ${#_side_pids[@]} unit(s) running side by side"; for pid in "${_side_pids[@]}"; do _terminate_tree "$pid"; done; exit 130' INT TERM
  for name in $names; do ( "$@" "$name" ) & _side_pids+=($!); done
  for pid in "${_side_pids[@]}"; do wait "$pid" || failed=1; done
  trap - INT TERM
  if [ "$failed" -ne 0 ]; then exit 1; fi
}
