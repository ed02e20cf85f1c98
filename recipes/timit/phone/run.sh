#!/usr/bin/env bash
# TIMIT (LDC93S1) phone classification: one phone label per 10 ms frame, trained on the 48-phone set and
# scored on the 39 classes of the standard 61 -> 48 -> 39 folding (Lee & Hon).
#
# --corpus-dir is the directory holding TRAIN/ and TEST/ in LDC's layout (DR1..DR8/<SPEAKER>/<SENTENCE>.WAV,
# .PHN, .WRD, .TXT; NIST SPHERE or RIFF audio, any letter case).
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/{train,dev,test}: TRAIN/, the 50-speaker dev set, the 24-speaker core test set (both
#               from TEST/; --test-set complete: every TEST/ speaker); SA sentences left out (--include-sa);
#               frame labels of the 48-phone set; data/lang/{phones.txt,score_map} (local/prepare_timit.py)
#   1 features  80-dim log-mel fbank (or --features mfcc) -> <features>/<set>/   (speechattn/conf/features/)
#   2 cmvn      CMVN statistics of the training set (or of every set: --cmvn speaker)
#   3 train     one experiment per model in exp/<model>/ (speechattn/conf/train.yaml, conf/data/timit_phone.yaml)
#   4 infer     speechattn-infer on data/test -> exp/<model>/decode_test/{frames.txt,phones.ctm}
#   5 score     frame accuracy and PER on the 39 classes (data/lang/score_map, copied into exp/<model>/),
#               confusion matrix, attention map -> exp/<model>/scores/
#   6 results   RESULTS.md
#
# Usage: ./run.sh --corpus-dir /export/corpora/LDC/LDC93S1/timit/TIMIT [options]
#        ./run.sh --corpus-dir DIR --model all --train-args "trainer.max_epochs=30"
set -euo pipefail

model=default           # default (mlp_context truncated_transformer) | all | space-separated model names
features=fbank          # fbank | mfcc (speechattn/conf/features/)
cmvn=global             # global | speaker | utterance | none (speechattn/conf/cmvn/)
test_set=core           # core: the 24-speaker core test set | complete: all 168 TEST/ speakers (dev then from TRAIN/)
include_sa=false        # true: keep the SA1/SA2 dialect sentences every speaker reads
max_utts=0              # >0: only the first N utterances of each set (quick smoke runs, tests)
. "$(dirname "$0")/../../../utils/recipe.sh"

task=phone
corpus_hint="TIMIT is licensed (LDC93S1, catalog.ldc.upenn.edu); pass the directory holding TRAIN/ and TEST/ as --corpus-dir. A fixture in its layout: python local/make_fixture.py timit --out-dir DIR"
models="$(phone_models "$model")"
case "$test_set" in core|complete) ;; *) log "ERROR: --test-set '$test_set': core | complete"; exit 1 ;; esac
experiments="$models"
phone_sets train
prep_opts=(--test-set "$test_set"); [ "$include_sa" = true ] && prep_opts+=(--include-sa)
[ "$max_utts" -gt 0 ] && prep_opts+=(--max-utts-per-set "$max_utts")

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_timit.py" --corpus-dir "$corpus_dir" --out-dir data --nj "$nj" "${prep_opts[@]}"
}
train_command() { cmd=(speechattn-train model="$1" data=timit_phone cmvn="$cmvn"); }
train_sets_of() { echo "train dev"; }

run_recipe
