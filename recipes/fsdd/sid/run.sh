#!/usr/bin/env bash
# Free Spoken Digit Dataset speaker identification: 6 speakers, closed set (too few speakers for
# verification), truncated self-attention encoder + attentive statistics pooling + AAM-softmax (docs/sid.md).
#
# FSDD is 8 kHz audio. It is resampled to 16 kHz when loaded (the toolkit's frame convention: 25/10 ms
# frames counted at 16 kHz), and the 80 mel filters are spread over 20-3800 Hz (--high-freq), the band
# the recordings actually contain, instead of 20-8000 Hz where half of them would see only the
# resampler's empty upper band.
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/ident_{train,dev,test} (400/50/50 recordings per speaker)    (local/prepare_sid_fsdd.py)
#   1 features  80-dim log-mel fbank (20 Hz - high_freq)
#   2 cmvn      mean-only CMN statistics of ident_train                           (speechattn/conf/cmvn/global_mean.yaml)
#   3 train     exp/ident: trained on ident_train, validated on ident_dev (the same training settings as
#               speechocean762: speechattn/conf/train_sid.yaml, speechattn/conf/sid/, speechattn/conf/trainer/sid.yaml)
#   4 infer     speechattn-infer task=sid on data/ident_test -> exp/ident/decode_ident_test
#   5 score     top-1/top-5 accuracy, embedding plot -> exp/ident/scores
#   6 results   RESULTS.md
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --train-args "sid=self_attention"
#        ./run.sh --max-speakers 3 --work-dir /tmp/fsdd_quick --train-args "trainer.max_epochs=1"
#        ./run.sh --augment speaker        (waveform augmentation -> exp/ident_aug; the speaker options: utils/recipe_sid.sh)
set -euo pipefail

high_freq=3800          # upper edge of the mel filterbank in Hz (8 kHz audio: content below 4 kHz)
max_speakers=0          # >0: only the first N speakers (quick runs, tests)
. "$(dirname "$0")/../../../utils/recipe_sid.sh"

task=sid
corpus_hint="Get the Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset) and pass --corpus-dir, or place it at ../shared/corpora/fsdd beside the project."
experiments=ident
feature_sets="ident_train ident_dev ident_test"
feature_args=(features=fbank features.high_freq="$high_freq" progress=false)
cmvn_sets=ident_train
cmvn_args=(cmvn=global_mean)
max_speakers_opt=(); [ "$max_speakers" -gt 0 ] && max_speakers_opt=(--max-speakers "$max_speakers")

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_sid_fsdd.py" --corpus-dir "$corpus_dir" --out-dir data "${max_speakers_opt[@]}"
}
train_command() { cmd=(speechattn-train --config-name train_sid data=fsdd_sid_ident); }
train_sets_of() { echo "ident_train ident_dev"; }
test_set_of() { echo ident_test; }

run_recipe
