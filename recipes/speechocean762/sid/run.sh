#!/usr/bin/env bash
# speechocean762 speaker recognition: closed-set identification (250 speakers) and verification on 125
# speakers never seen in training, with a truncated self-attention encoder + attentive statistics pooling +
# AAM-softmax (docs/sid.md).
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/ident_{train,dev,test} (all speakers, 8/1/1 utterances each), data/verif_{train,dev}
#               (the corpus's train/ speakers only), data/verif_test + trials (its test/ speakers)
#               (local/prepare_sid_speechocean762.py)
#   1 features  80-dim log-mel fbank of the six sets                                (speechattn/conf/features/)
#   2 cmvn      mean-only CMN statistics of each training set                       (speechattn/conf/cmvn/global_mean.yaml)
#   3 train     exp/ident (ident_train, validated on ident_dev) and exp/verif (verif_train, verif_dev)
#               (speechattn/conf/train_sid.yaml, speechattn/conf/sid/, speechattn/conf/trainer/sid.yaml)
#   4 infer     speechattn-infer task=sid: predictions.txt + embeddings.scp/.ark of ident_test / verif_test
#   5 score     identification top-1/top-5 (exp/ident/scores), verification EER/minDCF + DET curve
#               (exp/verif/scores), embedding plots
#   6 results   RESULTS.md
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --tasks verif
#        ./run.sh --max-speakers 5 --work-dir /tmp/sid_quick --train-args "trainer.max_epochs=1"
#        ./run.sh --train-args "sid=mean trainer.max_epochs=20"
#        ./run.sh --augment speaker        (waveform augmentation -> exp/{ident,verif}_aug; the speaker options: utils/recipe_sid.sh)
set -euo pipefail

tasks="ident verif"     # experiments to train/infer/score: ident and/or verif
max_speakers=0          # >0: only the first N speakers of the corpus's train/ and test/ each (quick runs, tests)
. "$(dirname "$0")/../../../utils/recipe_sid.sh"

task=sid
corpus_hint="Download speechocean762 (openslr.org resource 101) and pass --corpus-dir, or place it at ../shared/corpora/speechocean762 beside the project."
sid_ident_verif "$tasks"
max_speakers_opt=(); [ "$max_speakers" -gt 0 ] && max_speakers_opt=(--max-speakers "$max_speakers")

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_sid_speechocean762.py" --corpus-dir "$corpus_dir" --out-dir data "${max_speakers_opt[@]}"
}
# Verification keeps the validation-accuracy rule and all 125 training speakers: dev EER on the 13 speakers
# dev_eer would hold back (585 target trials) cannot tell epochs apart (docs/sid.md, runs D and E). Unless
# --augment says otherwise it trains with speed perturbation (each speed a new speaker) for 36 epochs
# (speechattn/conf/augment/speed.yaml; chosen on dev EER: docs/sid.md, run V1).
train_command() {
  cmd=(speechattn-train --config-name train_sid data="speechocean762_sid_$1")
  if [ "$1" = verif ]; then
    cmd+=(trainer.select_by=valid_acc)
    if [ "$augment" = none ]; then cmd+=(augment=speed trainer.max_epochs=36); fi
  fi
}
train_sets_of() { echo "${1}_train ${1}_dev"; }
test_set_of() { echo "${1}_test"; }

run_recipe
