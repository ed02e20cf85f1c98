#!/usr/bin/env bash
# LibriSpeech phone classification with Montreal Forced Aligner frame labels: one of 39 ARPAbet phones
# (stress removed) or SIL per 10 ms frame.
#
# --corpus-dir is the LibriSpeech/ directory (<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac and
# <spk>-<chapter>.trans.txt); --alignments-dir holds MFA's TextGrids, <subset>/<spk>/<chapter>/<utt-id>.TextGrid
# with a `phones` tier (ARPAbet with stress digits, empty intervals = silence), read with praatio.
#
# The stages are the template's (utils/recipe.sh); what this recipe puts in them:
#   0 data      data/{train,dev,test} from --train-sets / --dev-sets / --test-sets (default train-clean-100,
#               dev-clean, test-clean), data/lang/phones.txt    (local/prepare_librispeech_mfa.py)
#   1 features  80-dim log-mel fbank (or --features mfcc) -> <features>/<set>/   (speechattn/conf/features/)
#   2 cmvn      CMVN statistics of the training set (or of every set: --cmvn speaker)
#   3 train     one experiment per model in exp/<model>/ (speechattn/conf/train.yaml, conf/data/librispeech_phone.yaml)
#   4 infer     speechattn-infer on data/test -> exp/<model>/decode_test/{frames.txt,phones.ctm}
#   5 score     frame accuracy, PER (39 phones), confusion matrix, attention map -> exp/<model>/scores/
#   6 results   RESULTS.md
#
# Usage: ./run.sh --corpus-dir /data/LibriSpeech --alignments-dir /data/mfa/LibriSpeech [options]
#        ./run.sh --corpus-dir DIR --alignments-dir ADIR --train-sets "train-clean-100 train-clean-360"
set -euo pipefail

alignments_dir=         # MFA TextGrids: <subset>/<spk>/<chapter>/<utt-id>.TextGrid (default: ../shared/corpora/librispeech_mfa)
train_sets=train-clean-100  # subsets forming data/train (space-separated)
dev_sets=dev-clean      # subsets forming data/dev
test_sets=test-clean    # subsets forming data/test
model=default           # default (mlp_context truncated_transformer) | all | space-separated model names
features=fbank          # fbank | mfcc (speechattn/conf/features/)
cmvn=global             # global | speaker | utterance | none (speechattn/conf/cmvn/)
max_utts=0              # >0: only the first N utterances of each set (quick smoke runs, tests)
. "$(dirname "$0")/../../../utils/recipe.sh"

task=phone
corpus_hint="Download LibriSpeech (openslr.org resource 12) and align it with the Montreal Forced Aligner; pass --corpus-dir (LibriSpeech/) and --alignments-dir. A fixture in this layout: python local/make_fixture.py librispeech --out-dir DIR (DIR/LibriSpeech, DIR/alignments)"
[ -n "$alignments_dir" ] || alignments_dir="$root/../shared/corpora/librispeech_mfa"
if [ "$stage" -le 0 ] && [ ! -d "$alignments_dir" ]; then
  log "ERROR: alignments directory '$alignments_dir' not found. $corpus_hint"; exit 1
fi
models="$(phone_models "$model")"
experiments="$models"
phone_sets train
prep_opts=(--train-sets "$train_sets" --dev-sets "$dev_sets" --test-sets "$test_sets")
[ "$max_utts" -gt 0 ] && prep_opts+=(--max-utts-per-set "$max_utts")

recipe_data() {
  stage_unit "stage 0 data" data/.stage.data --force-arg --force -- \
    python "$root/local/prepare_librispeech_mfa.py" --corpus-dir "$corpus_dir" --alignments-dir "$alignments_dir" \
    --out-dir data --nj "$nj" "${prep_opts[@]}"
}
train_command() { cmd=(speechattn-train model="$1" data=librispeech_phone cmvn="$cmvn"); }
train_sets_of() { echo "train dev"; }

run_recipe
