#!/usr/bin/env bash
# The recipe template (in the spirit of ESPnet's egs2/TEMPLATE/asr1/asr.sh), sourced by every
# recipes/<corpus>/<task>/run.sh after it has declared its own options:
#
#   corpus options ...      # declared in run.sh, `name=default   # help`
#   . "$(dirname "$0")/../../../utils/recipe.sh"     # the options below, --help, option parsing
#   task=phone ...          # what the template needs to know (see "A recipe defines" below)
#   recipe_data() { ... }   # its data preparation
#   run_recipe              # runs the selected stages
#
# Stages (each unit of work is skipped when its stamp says it is complete: utils/stage.sh):
#   0 data      recipe_data (the recipe's local/ script)            -> data/<set>/, stamp data/.stage.data
#   1 features  speechattn-compute-features of each $feature_sets   -> data/<set>/feats.scp, .stage.features
#   2 cmvn      speechattn-compute-cmvn of each $cmvn_sets          -> data/<set>/cmvn_*, .stage.cmvn
#   3 train     speechattn-train, one per name in $experiments      -> exp/<name>/, .stage.train
#   4 infer     speechattn-infer task=$task on its test set         -> exp/<name>/decode_<set>/, .stage.infer
#   5 score     speechattn-score task=$task                         -> exp/<name>/scores/, .stage.score
#   6 results   speechattn-results task=$task over exp/             -> RESULTS.md, .stage.results
# Training, inference and scoring run the experiments side by side (--parallel true, one thread each; console
# output in exp/<name>/{train,infer,score}.out) or in turn (--parallel false, console output also on screen).
#
# A recipe defines, after sourcing this file:
#   task              phone | sid (speechattn-infer/score/results task=)
#   corpus_hint       where to get the corpus (said when --corpus-dir does not exist)
#   experiments       experiment names: exp/<name>
#   feature_sets      data sets whose features stage 1 computes; feature_args: overrides for all of them
#   cmvn_sets         data sets whose statistics stage 2 computes; cmvn_args: overrides (cmvn=...)
#   recipe_data       function: stage 0, calls `stage_unit "stage 0 data" data/.stage.data ... -- COMMAND`
#   train_command E   function: sets the array `cmd` to E's speechattn-train command (without exp_dir)
#   train_sets_of E   function: the data sets E trains and validates on
#   test_set_of E     function: the data set E is decoded and scored on
# and may define feats_dir_of S (function: where set S's feature archives go). A part of the template for
# one kind of recipe (utils/recipe_sid.sh: the speaker recipes) declares its options, sets the array
# _sa_part_files to itself and sources this file; after it, it may set the hooks
#   train_overrides / infer_overrides / score_overrides   arrays: Hydra overrides added to every
#                     speechattn-train / -infer / -score command (before --train-args)
#   train_inputs      stamps every training also depends on (e.g. data/rirs/.stage.rirs)
#   before_train      function: units run at the start of stage 3, before the experiments train
# and redefine exp_of E (where experiment E goes: exp/E by default).
#
# Options of every recipe (run.sh --help lists them after the recipe's own):
stage=0                 # first stage to run: 0 data, 1 features, 2 cmvn, 3 train, 4 infer, 5 score, 6 results
stop_stage=6            # last stage to run
corpus_dir=             # corpus root (default: ../shared/corpora/<corpus> beside the project)
work_dir=               # where data/, the feature archives, exp/ and RESULTS.md go (default: the recipe directory)
nj=2                    # parallel jobs for data preparation and feature extraction
parallel=true           # true: train, decode and score the experiments side by side, one thread each (2-core machines)
train_args=             # extra Hydra overrides for every training run, e.g. "trainer.max_epochs=5"
force=false             # true: redo every selected stage even when its stamp says it is complete
dry_run=false           # true: log the command of every unit that would run (and why) instead of running it (nothing is written but an empty work dir)
_recipe_args=("$@")
_sa_option_files=("$0" ${_sa_part_files[@]+"${_sa_part_files[@]}"} "${BASH_SOURCE[0]}")
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

recipe_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="$(basename "$(dirname "$recipe_dir")")"   # recipes/<corpus>/<task>
. "$root/utils/path.sh"
. "$root/utils/log.sh"
. "$root/utils/stage.sh"

# Any command that fails outside a stage unit: one line naming it (set -E: also inside functions).
set -E
trap 'log "ERROR: \"$BASH_COMMAND\" failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO"; exit 1' ERR

[ -n "$corpus_dir" ] || corpus_dir="$root/../shared/corpora/$corpus"
[ -n "$work_dir" ] || work_dir="$recipe_dir"
threads=1  # intra-op threads per training/decoding job: 1 measured fastest on 2-core machines (bench/README.md)
cmvn_args=(); feature_args=()
train_overrides=(); infer_overrides=(); score_overrides=(); train_inputs=""
before_train() { :; }
test_set_of() { echo test; }

# The stamp of a data set's stage-0 output: its own (data/<set>/.stage.data) or the whole stage's.
data_stamp_of() { if [ -f "data/$1/.stage.data" ]; then echo "data/$1/.stage.data"; else echo data/.stage.data; fi; }
exp_of() { echo "exp/$1"; }
# The phone recipes' data sets: features of TRAIN_SET, dev and test in $features/<set>/ (--features), CMVN
# statistics of the training set (every set's with --cmvn speaker). $1: the training set.
phone_sets() {
  feature_sets="$1 dev test"
  feature_args=(features="$features")
  feats_dir_of() { echo "$features/$1"; }
  cmvn_args=(cmvn="$cmvn")
  cmvn_sets=$1; [ "$cmvn" = speaker ] && cmvn_sets="$feature_sets"  # global: the training set's stats serve every set
  return 0
}
# The phone recipes' --model: default | all | space-separated model names (speechattn/conf/model/).
phone_models() {
  case "$1" in
    default) echo "mlp_context truncated_transformer" ;;
    all) echo "mlp_context blstm transformer truncated_transformer" ;;
    *) echo "$1" ;;
  esac
}
decode_of() { echo "$(exp_of "$1")/decode_$(test_set_of "$1")"; }

# Runs "$@ <experiment>" for every experiment: side by side when --parallel true, else in turn
# (side_by_side in utils/stage.sh; an interrupted recipe stops the units running beside it).
for_each_experiment() {
  local e
  # (a dry run goes in turn: the units that would run are remembered for the ones downstream)
  if [ "$parallel" = true ] && [ "$dry_run" = false ]; then side_by_side "$experiments" "$@"; return; fi
  for e in $experiments; do "$@" "$e"; done
}

# The per-set units of stages 1 and 2. `features_unit SET [stage_unit options]` runs (or with --check-only
# checks) one set; _features_cmd / _cmvn_cmd set the array `cmd` to the set's command as its stamp records it.
_features_cmd() {
  local dir=()
  if declare -F feats_dir_of >/dev/null; then dir=(feats_dir="$(feats_dir_of "$1")"); fi
  cmd=(speechattn-compute-features data_dir="data/$1" "${dir[@]}" nj="$nj" "${feature_args[@]}")
}
features_unit() {
  local s="$1" cmd=(); shift; _features_cmd "$s"
  stage_unit "stage 1 features data/$s" "data/$s/.stage.features" --after "$(data_stamp_of "$s")" \
    --hydra compute_features --force-arg force=true "$@" -- "${cmd[@]}"
}
_cmvn_cmd() { cmd=(speechattn-compute-cmvn data_dir="data/$1" "${cmvn_args[@]}"); }
cmvn_unit() {
  local s="$1" cmd=(); shift; _cmvn_cmd "$s"
  stage_unit "stage 2 cmvn data/$s" "data/$s/.stage.cmvn" --after "data/$s/.stage.features" \
    --hydra compute_cmvn --force-arg force=true "$@" -- "${cmd[@]}"
}

# Stage 1 or 2 over data sets: the sets whose unit is not up to date run in one process (a Hydra multirun
# over data_dir: one Python start-up instead of one per set), each keeping its own stamp. A recipe with its
# own feature directory per set (feats_dir_of) computes features set by set.
# Usage: per_set_stage NUMBER NAME (features|cmvn) SET...
per_set_stage() {
  local n="$1" name="$2"; shift 2
  local s cmd=() todo=() sigs=()
  if [ "$name" = features ] && declare -F feats_dir_of >/dev/null; then
    for s in "$@"; do features_unit "$s"; done
    return 0
  fi
  for s in "$@"; do
    if "${name}_unit" "$s" --check-only; then continue; fi
    log "stage $n $name data/$s: $stage_why"
    todo+=("$s"); sigs+=("$stage_sig")
  done
  if [ "${#todo[@]}" -eq 0 ]; then return 0; fi
  if [ "${#todo[@]}" -eq 1 ] || [ "$dry_run" = true ]; then
    for s in "${todo[@]}"; do "${name}_unit" "$s"; done
    return 0
  fi
  local i dirs start=$SECONDS rc=0 batch=()
  for i in "${!todo[@]}"; do stage_started "data/${todo[$i]}/.stage.$name" "${sigs[$i]}"; done
  dirs="$(printf 'data/%s,' "${todo[@]}")"
  "_${name}_cmd" "${todo[0]}"
  for i in "${!cmd[@]}"; do  # the first set's command, over all of them
    if [ "${cmd[$i]}" = "data_dir=data/${todo[0]}" ]; then cmd[$i]="data_dir=${dirs%,}"; fi
  done
  batch=("${cmd[0]}" -m "hydra.sweep.dir=data/log/${cmd[0]#speechattn-}" "${cmd[@]:1}" force=true)
  log "stage $n $name ${todo[*]}: in one process"
  "${batch[@]}" || rc=$?
  if [ "$rc" -ne 0 ]; then stage_failed "stage $n $name ${todo[*]}" "$rc" "" "${batch[@]}"; fi
  for i in "${!todo[@]}"; do stage_finished "data/${todo[$i]}/.stage.$name" "${sigs[$i]}"; done
  log "stage $n $name ${todo[*]}: done in $((SECONDS - start)) s"
}
# The stamps behind the features a job reads from data sets: their features and statistics (if any).
_set_inputs() {
  local s
  for s in "$@"; do
    echo "data/$s/.stage.features"
    if [ -f "data/$s/.stage.cmvn" ]; then echo "data/$s/.stage.cmvn"; fi
  done
}
train_unit() {
  local e="$1" cmd=()
  train_command "$e"
  # shellcheck disable=SC2086  # train_args is a list of Hydra overrides
  stage_unit "stage 3 train $(exp_of "$e")" "$(exp_of "$e")/.stage.train" \
    --after "$(_set_inputs $(train_sets_of "$e")) $train_inputs" \
    --hydra train --clean "$(exp_of "$e")" --out "$(exp_of "$e")/train.out" -- \
    "${cmd[@]}" exp_dir="$(exp_of "$e")" trainer.threads="$threads" ${train_overrides[@]+"${train_overrides[@]}"} $train_args
}
infer_unit() {
  local e="$1" t; t="$(test_set_of "$e")"
  stage_unit "stage 4 infer $(exp_of "$e") on data/$t" "$(decode_of "$e")/.stage.infer" \
    --after "$(exp_of "$e")/.stage.train $(_set_inputs "$t")" --hydra infer --force-arg force=true \
    --out "$(exp_of "$e")/infer.out" -- \
    speechattn-infer task="$task" exp_dir="$(exp_of "$e")" data_dir="data/$t" output_dir="$(decode_of "$e")" \
    threads="$threads" ${infer_overrides[@]+"${infer_overrides[@]}"}
}
score_unit() {
  local e="$1" t; t="$(test_set_of "$e")"
  stage_unit "stage 5 score $(exp_of "$e")" "$(exp_of "$e")/scores/.stage.score" \
    --after "$(decode_of "$e")/.stage.infer $(data_stamp_of "$t")" --hydra score --clean "$(exp_of "$e")/scores" \
    --out "$(exp_of "$e")/score.out" -- \
    speechattn-score task="$task" exp_dir="$(exp_of "$e")" ref_dir="data/$t" hyp_dir="$(decode_of "$e")" \
    output_dir="$(exp_of "$e")/scores" ${score_overrides[@]+"${score_overrides[@]}"}
}
results_unit() {
  # Every scored experiment under exp/ is a row, including ones of earlier runs with other options.
  stage_unit "stage 6 results RESULTS.md" .stage.results --after "$(ls exp/*/scores/.stage.score 2>/dev/null || true)" -- \
    speechattn-results task="$task" exp_root=exp output=RESULTS.md
}

run_recipe() {
  mkdir -p "$work_dir"
  cd "$work_dir"
  log "$0 ${_recipe_args[*]}"
  log_environment
  experiments="$(echo $experiments)"  # one space between names
  log "corpus: $corpus_dir; work dir: $work_dir; experiments: $experiments; nj: $nj; parallel: $parallel"
  if stage_wanted 0; then
    log "stage 0: data directories ($corpus)"
    if [ ! -d "$corpus_dir" ]; then
      log "ERROR: corpus directory '$corpus_dir' not found. $corpus_hint"
      exit 1
    fi
    recipe_data
  fi
  local s
  if stage_wanted 1; then
    log "stage 1: features of $feature_sets (nj=$nj)"
    per_set_stage 1 features $feature_sets
  fi
  if stage_wanted 2; then
    log "stage 2: CMVN statistics of $cmvn_sets"
    per_set_stage 2 cmvn $cmvn_sets
  fi
  if stage_wanted 3; then
    log "stage 3: training $experiments (parallel: $parallel; logs: exp/<name>/train.log)"
    before_train
    for_each_experiment train_unit
    for s in $experiments; do
      log "stage 3: $s: $(grep -h 'best validation' "$(exp_of "$s")/train.log" 2>/dev/null | tail -1 | sed 's/.*\] - //' || true)"
    done
  fi
  if stage_wanted 4; then
    log "stage 4: inference of $experiments"
    for_each_experiment infer_unit
  fi
  if stage_wanted 5; then
    log "stage 5: scoring $experiments"
    for_each_experiment score_unit
  fi
  if stage_wanted 6; then
    log "stage 6: results table $work_dir/RESULTS.md"
    results_unit
    if [ "$dry_run" = false ]; then cat RESULTS.md; fi
  fi
  log "done; $(uptime)"
}
