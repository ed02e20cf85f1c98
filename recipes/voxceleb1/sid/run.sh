#!/usr/bin/env bash
# VoxCeleb1 speaker recognition: identification on the official iden split (1,251 speakers; top-1/top-5)
# and verification on the Vox1-O trial list (veri_test2.txt; EER, minDCF), trained on the speakers that
# appear in no trial; truncated self-attention encoder + attentive statistics pooling + AAM-softmax (docs/sid.md).
#
# --corpus-dir is VoxCeleb1 as it unpacks, dev and test parts merged: wav/idNNNNN/<video>/NNNNN.wav,
# iden_split.txt, veri_test2.txt, optional vox1_meta.csv.
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/ident_{train,dev,test} (iden split sets 1/2/3), data/verif_{train,dev} (speakers of no
#               trial), data/verif_test + trials (the trial list)             (local/prepare_voxceleb1.py)
#   1 features  80-dim log-mel fbank of the six sets                          (speechattn/conf/features/)
#   2 cmvn      mean-only CMN statistics of each training set                 (speechattn/conf/cmvn/global_mean.yaml)
#   3 train     exp/ident and exp/verif (speechattn/conf/train_sid.yaml, conf/data/voxceleb1_sid_{ident,verif}.yaml)
#   4 infer     speechattn-infer task=sid on ident_test / verif_test
#   5 score     identification top-1/top-5 (exp/ident/scores), verification EER, minDCF at P_target 0.01
#               (and 0.01 / 0.05 in scores.json: min_dcf_at_p_target), DET curve (exp/verif/scores)
#   6 results   RESULTS.md
#
# Usage: ./run.sh --corpus-dir /data/voxceleb1 [options]      e.g. ./run.sh --corpus-dir DIR --tasks verif
# The real corpus (~40 GB of fbank) does not fit in memory: add
#   --train-args "data.on_demand=true trainer.num_workers=2"
# to read the features from their arks as training uses them (same results; not with augment=speaker).
set -euo pipefail

tasks="ident verif"     # experiments to train/infer/score: ident and/or verif
trials=veri_test2.txt   # trial list(s) in --corpus-dir, space-separated (e.g. "veri_test2.txt list_test_hard2.txt")
. "$(dirname "$0")/../../../utils/recipe_sid.sh"

task=sid
corpus_hint="Download VoxCeleb1 (robots.ox.ac.uk/~vgg/data/voxceleb), merge the dev and test parts under wav/ and pass --corpus-dir. A fixture in this layout: python local/make_fixture.py voxceleb1 --out-dir DIR"
sid_ident_verif "$tasks"

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_voxceleb1.py" --corpus-dir "$corpus_dir" --out-dir data --nj "$nj" --trials "$trials"
}
train_command() { cmd=(speechattn-train --config-name train_sid data="voxceleb1_sid_$1"); }
train_sets_of() { echo "${1}_train ${1}_dev"; }
test_set_of() { echo "${1}_test"; }

run_recipe
