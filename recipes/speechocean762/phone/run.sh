#!/usr/bin/env bash
# speechocean762 phone classification: real speech -> 25/10 ms frames -> one phone label per frame.
#
# Stages (each skips work whose outputs are complete; re-running continues where it stopped):
#   0 data      Kaldi data dirs data/{train,dev,test} + frame-level phone labels (local/prepare_speechocean762_phone.py)
#               (+ data/train_sp with --speed-perturb true: local/perturb_data_dir_speed.py)
#   1 features  80-dim log-mel fbank (or --features mfcc), Kaldi ark/scp, --nj jobs   (speechattn/conf/features/)
#   2 cmvn      CMVN statistics of the training set                                 (speechattn/conf/cmvn/)
#   3 train     one experiment per model in exp/<model>/                            (speechattn/conf/train.yaml, speechattn/conf/model/)
#   4 infer     speechattn-infer on data/test -> exp/<model>/decode_test/{frames.txt,phones.ctm}
#   5 score     frame accuracy, PER, confusion matrix, attention map -> exp/<model>/scores/, RESULTS.md
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --model truncated_transformer
#        ./run.sh --model all      (adds blstm and transformer to the default comparison)
#        ./run.sh --train-args "model.left=16 trainer.max_epochs=5"
set -euo pipefail

stage=0                 # first stage to run
stop_stage=5            # last stage to run
corpus_dir=             # speechocean762 root (default: ../shared/corpora/speechocean762 beside the project)
nj=2                    # parallel jobs for data preparation and feature extraction
model=default           # default (mlp_context truncated_transformer) | all | space-separated model names
features=fbank          # fbank | mfcc (speechattn/conf/features/)
cmvn=global             # global | speaker | utterance | none (speechattn/conf/cmvn/)
speed_perturb=false     # true: train on 0.9/1.0/1.1-speed copies of data/train (data/train_sp, Kaldi's 3-way speed perturbation) -> exp/<model>_sp; 3x the training time per epoch
train_args=             # extra Hydra overrides for every training run, e.g. "trainer.max_epochs=5"
parallel=true           # true: train (and decode) the models concurrently, one thread each (2-core machines)
max_utts=0              # >0: only the first N utterances of each set (quick smoke runs, tests)
force=false             # true: redo every selected stage even when its outputs are complete
. "$(dirname "$0")/../../../utils/parse_options.sh"

recipe_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$recipe_dir/../../.." && pwd)"
cd "$recipe_dir"
. "$root/utils/path.sh"
. "$root/utils/log.sh"

if [ -z "$corpus_dir" ]; then
  corpus_dir="$root/../shared/corpora/speechocean762"
fi
case "$model" in
  default) models="mlp_context truncated_transformer" ;;
  all) models="mlp_context blstm transformer truncated_transformer" ;;
  *) models="$model" ;;
esac
force_flag=(); [ "$force" = true ] && force_flag=(--force)
hydra_force=(); [ "$force" = true ] && hydra_force=(force=true)
train_set=train; exp_suffix=""
if [ "$speed_perturb" = true ]; then train_set=train_sp; exp_suffix=_sp; fi
sets="$train_set dev test"
exp_of() { echo "exp/$1$exp_suffix"; }  # experiment directory of a model

log "$0 $*"
log_environment
log "corpus: $corpus_dir; models: $models; features: $features; cmvn: $cmvn; nj: $nj"

if stage_wanted 0; then
  log "stage 0: data directories and frame-level phone labels"
  if [ ! -d "$corpus_dir" ]; then
    log "ERROR: corpus directory '$corpus_dir' not found. Download speechocean762 (openslr.org resource 101)" \
        "and pass --corpus-dir, or place it at ../shared/corpora/speechocean762 beside the project."
    exit 1
  fi
  max_utts_opt=(); [ "$max_utts" -gt 0 ] && max_utts_opt=(--max-utts-per-set "$max_utts")
  python "$root/local/prepare_speechocean762_phone.py" --corpus-dir "$corpus_dir" --out-dir data --nj "$nj" \
    "${max_utts_opt[@]}" "${force_flag[@]}"
  if [ "$speed_perturb" = true ]; then
    python "$root/local/perturb_data_dir_speed.py" data/train data/train_sp "${force_flag[@]}"
  fi
fi

if stage_wanted 1; then
  log "stage 1: $features features (nj=$nj)"
  for s in $sets; do
    speechattn-compute-features data_dir=data/$s feats_dir="$features/$s" nj="$nj" features="$features" \
      "${hydra_force[@]}"
  done
fi

if stage_wanted 2; then
  log "stage 2: CMVN statistics ($cmvn)"
  # global: the training set's statistics serve every set; speaker: each set has its own speakers' stats.
  cmvn_sets=$train_set; [ "$cmvn" = speaker ] && cmvn_sets="$sets"
  for s in $cmvn_sets; do
    speechattn-compute-cmvn data_dir=data/$s cmvn="$cmvn" "${hydra_force[@]}"
  done
fi

max_utts_override=(); [ "$max_utts" -gt 0 ] && max_utts_override=(data.max_utts="$max_utts")
# Runs "$@" for every model: concurrently with one intra-op thread each when --parallel true (on a
# 2-core machine two single-threaded jobs beat one two-threaded job, see bench/README.md), else in turn.
# Console output (progress bars) is appended to $(exp_of <model>)/<stage>.out (a resumed run keeps the earlier
# lines); the Hydra apps write their own clean log, e.g. exp/<model>/train.log. A failed job fails the
# stage after all jobs have finished.
for_each_model() {
  local stage_name="$1"; shift
  local pids=() m failed=0
  for m in $models; do
    mkdir -p "$(exp_of "$m")"
    if [ "$parallel" = true ]; then
      ( "$@" "$m" >> "$(exp_of "$m")/$stage_name.out" 2>&1 ) &
      pids+=($!)
    else
      "$@" "$m" 2>&1 | tee -a "$(exp_of "$m")/$stage_name.out"
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ "$failed" -ne 0 ]; then
    for m in $models; do log "--- $(exp_of "$m")/$stage_name.out (tail) ---"; tail -n 20 "$(exp_of "$m")/$stage_name.out" >&2; done
    log "ERROR: $stage_name failed for at least one model (logs above)"
    exit 1
  fi
}
threads=1  # one intra-op thread per job: measured faster than 2 on 2-core machines (bench/README.md)

train_model() {
  # shellcheck disable=SC2086  # train_args is a list of Hydra overrides
  speechattn-train model="$1" exp_dir="$(exp_of "$1")" data.train_dir="data/$train_set" cmvn="$cmvn" \
    trainer.threads="$threads" "${max_utts_override[@]}" $train_args
}
infer_model() {
  speechattn-infer task=phone exp_dir="$(exp_of "$1")" data_dir=data/test output_dir="$(exp_of "$1")/decode_test" \
    threads="$threads" "${hydra_force[@]}"
}

if stage_wanted 3; then
  log "stage 3: training $models on data/$train_set -> $(exp_of '<model>') (logs: $(exp_of '<model>')/train.log)"
  if [ "$force" = true ]; then for m in $models; do rm -rf "$(exp_of "$m")"; done; fi
  for_each_model train train_model
  for m in $models; do grep -h "best validation" "$(exp_of "$m")/train.log" >&2 || true; done
fi

if stage_wanted 4; then
  log "stage 4: inference of $models on data/test -> $(exp_of '<model>')/decode_test"
  for_each_model infer infer_model
fi

if stage_wanted 5; then
  for m in $models; do
    e="$(exp_of "$m")"
    log "stage 5: scoring $m -> $e/scores"
    speechattn-score task=phone exp_dir="$e" ref_dir=data/test hyp_dir="$e/decode_test" output_dir="$e/scores"
  done
  speechattn-results task=phone exp_root=exp output=RESULTS.md
  log "results table: $recipe_dir/RESULTS.md"
  cat RESULTS.md
fi
log "done"
