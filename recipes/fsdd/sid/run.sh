#!/usr/bin/env bash
# Free Spoken Digit Dataset speaker identification: 6 speakers, closed set (too few speakers for
# verification), truncated self-attention encoder + attentive statistics pooling + AAM-softmax (docs/sid.md).
#
# FSDD is 8 kHz audio. It is resampled to 16 kHz when loaded (the toolkit's frame convention: 25/10 ms
# frames counted at 16 kHz), and the 80 mel filters are spread over 20-3800 Hz (--high-freq), the band
# the recordings actually contain, instead of 20-8000 Hz where half of them would see only the
# resampler's empty upper band.
#
# Stages (each skips work whose outputs are complete; re-running continues where it stopped):
#   0 data      data/ident_{train,dev,test} (400/50/50 recordings per speaker)    (local/prepare_sid_fsdd.py)
#   1 features  80-dim log-mel fbank (20 Hz - high_freq), Kaldi ark/scp, --nj jobs
#   2 cmvn      mean-only CMN statistics of ident_train                           (speechattn/conf/cmvn/global_mean.yaml)
#   3 train     exp/ident: trained on ident_train, validated on ident_dev (the same training settings as
#               speechocean762: speechattn/conf/train_sid.yaml, speechattn/conf/sid/, speechattn/conf/trainer/sid.yaml)
#   4 infer     speechattn-infer task=sid on data/ident_test -> exp/ident/decode_ident_test
#   5 score     top-1/top-5 accuracy, embedding plot -> exp/ident/scores, RESULTS.md
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --train-args "sid=self_attention"
#        ./run.sh --max-speakers 3 --work-dir /tmp/fsdd_quick --train-args "trainer.max_epochs=1"
set -euo pipefail

stage=0                 # first stage to run
stop_stage=5            # last stage to run
corpus_dir=             # FSDD root (default: ../shared/corpora/fsdd beside the project)
work_dir=               # where data/ (with the features), exp/ and RESULTS.md go (default: this recipe directory)
nj=2                    # parallel jobs for feature extraction
high_freq=3800          # upper edge of the mel filterbank in Hz (8 kHz audio: content below 4 kHz)
train_args=             # extra Hydra overrides for training, e.g. "trainer.max_epochs=10 sid=mean"
max_speakers=0          # >0: only the first N speakers (quick runs, tests)
force=false             # true: redo every selected stage even when its outputs are complete
. "$(dirname "$0")/../../../utils/parse_options.sh"

recipe_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$recipe_dir/../../.." && pwd)"
. "$root/utils/path.sh"
. "$root/utils/log.sh"
[ -z "$corpus_dir" ] && corpus_dir="$root/../shared/corpora/fsdd"
[ -z "$work_dir" ] && work_dir="$recipe_dir"
mkdir -p "$work_dir"
cd "$work_dir"

force_flag=(); [ "$force" = true ] && force_flag=(--force)
hydra_force=(); [ "$force" = true ] && hydra_force=(force=true)

log "$0 $*"
log_environment
log "corpus: $corpus_dir; work dir: $work_dir; nj: $nj; mel filters up to $high_freq Hz; max speakers: $max_speakers;" \
    "$(uptime)"

if stage_wanted 0; then
  log "stage 0: speaker ID data directories"
  if [ ! -d "$corpus_dir" ]; then
    log "ERROR: corpus directory '$corpus_dir' not found. Get the Free Spoken Digit Dataset" \
        "(github.com/Jakobovski/free-spoken-digit-dataset) and pass --corpus-dir, or place it at" \
        "../shared/corpora/fsdd beside the project."
    exit 1
  fi
  max_speakers_opt=(); [ "$max_speakers" -gt 0 ] && max_speakers_opt=(--max-speakers "$max_speakers")
  python "$root/local/prepare_sid_fsdd.py" --corpus-dir "$corpus_dir" --out-dir data \
    "${max_speakers_opt[@]}" "${force_flag[@]}"
fi

if stage_wanted 1; then
  log "stage 1: fbank features, mel filters 20-$high_freq Hz (nj=$nj)"
  speechattn-compute-features -m hydra.sweep.dir=data/log/compute_features \
    data_dir=data/ident_train,data/ident_dev,data/ident_test nj="$nj" features=fbank \
    features.high_freq="$high_freq" progress=false "${hydra_force[@]}"
fi

if stage_wanted 2; then
  log "stage 2: mean-only CMN statistics of ident_train"
  speechattn-compute-cmvn data_dir=data/ident_train cmvn=global_mean "${hydra_force[@]}"
fi

if stage_wanted 3; then
  log "stage 3: training -> exp/ident"
  [ "$force" = true ] && rm -rf exp/ident
  # shellcheck disable=SC2086  # train_args is a list of Hydra overrides
  speechattn-train --config-name train_sid data=fsdd_sid_ident exp_dir=exp/ident $train_args
fi

if stage_wanted 4; then
  log "stage 4: embeddings and predictions of exp/ident on data/ident_test -> exp/ident/decode_ident_test"
  speechattn-infer task=sid exp_dir=exp/ident data_dir=data/ident_test output_dir=exp/ident/decode_ident_test \
    "${hydra_force[@]}"
fi

if stage_wanted 5; then
  log "stage 5: scoring exp/ident on data/ident_test -> exp/ident/scores"
  speechattn-score task=sid exp_dir=exp/ident ref_dir=data/ident_test hyp_dir=exp/ident/decode_ident_test \
    output_dir=exp/ident/scores
  speechattn-results task=sid exp_root=exp output=RESULTS.md
  log "results table: $work_dir/RESULTS.md"
  cat RESULTS.md
fi
log "done; $(uptime)"
