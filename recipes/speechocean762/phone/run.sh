#!/usr/bin/env bash
# speechocean762 phone classification: real speech -> 25/10 ms frames -> one phone label per frame.
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/{train,dev,test} + frame-level phone labels (local/prepare_speechocean762_phone.py)
#               (+ data/train_sp with --speed-perturb true: local/perturb_data_dir_speed.py)
#   1 features  80-dim log-mel fbank (or --features mfcc) -> <features>/<set>/   (speechattn/conf/features/)
#   2 cmvn      CMVN statistics of the training set (or of every set: --cmvn speaker)  (speechattn/conf/cmvn/)
#   3 train     one experiment per model in exp/<model>/     (speechattn/conf/train.yaml, speechattn/conf/model/)
#   4 infer     speechattn-infer on data/test -> exp/<model>/decode_test/{frames.txt,phones.ctm}
#   5 score     frame accuracy, PER, confusion matrix, attention map -> exp/<model>/scores/
#   6 results   RESULTS.md
# Re-running skips every unit whose stamp is current; changing an option redoes what depends on it.
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --model truncated_transformer
#        ./run.sh --model all      (adds blstm and transformer to the default comparison)
#        ./run.sh --train-args "model.left=16 trainer.max_epochs=5"
set -euo pipefail

model=default           # default (mlp_context truncated_transformer) | all | space-separated model names
features=fbank          # fbank | mfcc (speechattn/conf/features/)
cmvn=global             # global | speaker | utterance | none (speechattn/conf/cmvn/)
speed_perturb=false     # true: train on 0.9/1.0/1.1-speed copies of data/train (data/train_sp, Kaldi's 3-way speed perturbation) -> exp/<model>_sp; 3x the training time per epoch
max_utts=0              # >0: only the first N utterances of each set (quick smoke runs, tests)
. "$(dirname "$0")/../../../utils/recipe.sh"

task=phone
corpus_hint="Download speechocean762 (openslr.org resource 101) and pass --corpus-dir, or place it at ../shared/corpora/speechocean762 beside the project."
models="$(phone_models "$model")"
train_set=train; suffix=
if [ "$speed_perturb" = true ]; then train_set=train_sp; suffix=_sp; fi
experiments="$(for m in $models; do echo -n "$m$suffix "; done)"
phone_sets "$train_set"
max_utts_opt=(); [ "$max_utts" -gt 0 ] && max_utts_opt=(--max-utts-per-set "$max_utts")
max_utts_override=(); [ "$max_utts" -gt 0 ] && max_utts_override=(data.max_utts="$max_utts")

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_speechocean762_phone.py" --corpus-dir "$corpus_dir" --out-dir data --nj "$nj" \
    "${max_utts_opt[@]}"
  if [ "$speed_perturb" = true ]; then
    stage_unit "stage 0 data data/train_sp" data/train_sp/.stage.data --after data/.stage.data --force-arg --force -- \
      python "$root/local/perturb_data_dir_speed.py" data/train data/train_sp
  fi
}
train_command() {  # $1: experiment = <model>[_sp]
  cmd=(speechattn-train model="${1%_sp}" data.train_dir="data/$train_set" cmvn="$cmvn" "${max_utts_override[@]}")
}
train_sets_of() { echo "$train_set dev"; }

run_recipe
