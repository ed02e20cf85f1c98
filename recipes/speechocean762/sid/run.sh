#!/usr/bin/env bash
# speechocean762 speaker recognition: closed-set identification (250 speakers) and verification on 125
# speakers never seen in training, with a truncated self-attention encoder + attentive statistics pooling +
# AAM-softmax (docs/sid.md).
#
# Stages (each skips work whose outputs are complete; re-running continues where it stopped):
#   0 data      data/ident_{train,dev,test} (all speakers, 8/1/1 utterances each), data/verif_{train,dev}
#               (the corpus's train/ speakers only), data/verif_test + trials (its test/ speakers)
#   1 features  80-dim log-mel fbank, Kaldi ark/scp, --nj jobs                     (speechattn/conf/features/)
#   2 cmvn      mean-only CMN statistics of each training set                       (speechattn/conf/cmvn/global_mean.yaml)
#   3 train     exp/ident (ident_train, validated on ident_dev) and exp/verif (verif_train, verif_dev)
#               (speechattn/conf/train_sid.yaml, speechattn/conf/sid/, speechattn/conf/trainer/sid.yaml); in parallel when --nj >= 2
#   4 infer     speechattn-infer task=sid: predictions.txt + embeddings.scp/.ark of ident_test / verif_test
#   5 score     identification top-1/top-5 (exp/ident/scores), verification EER/minDCF + DET curve
#               (exp/verif/scores), embedding plots, RESULTS.md
#
# Usage: ./run.sh [options]        e.g. ./run.sh --stage 3 --tasks verif
#        ./run.sh --max-speakers 5 --work-dir /tmp/sid_quick --train-args "trainer.max_epochs=1"
#        ./run.sh --train-args "sid=mean trainer.max_epochs=20"
set -euo pipefail

stage=0                 # first stage to run
stop_stage=5            # last stage to run
corpus_dir=             # speechocean762 root (default: ../shared/corpora/speechocean762 beside the project)
work_dir=               # where data/ (with the features), exp/ and RESULTS.md go (default: this recipe directory)
nj=2                    # parallel jobs for features; >= 2 also trains ident and verif side by side
tasks="ident verif"     # experiments to train/infer/score: ident and/or verif
train_args=             # extra Hydra overrides for every training run, e.g. "trainer.max_epochs=5 sid=mean"
max_speakers=0          # >0: only the first N speakers of the corpus's train/ and test/ each (quick runs, tests)
force=false             # true: redo every selected stage even when its outputs are complete
. "$(dirname "$0")/../../../utils/parse_options.sh"

recipe_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$recipe_dir/../../.." && pwd)"
. "$root/utils/path.sh"
. "$root/utils/log.sh"
[ -z "$corpus_dir" ] && corpus_dir="$root/../shared/corpora/speechocean762"
[ -z "$work_dir" ] && work_dir="$recipe_dir"
mkdir -p "$work_dir"
cd "$work_dir"

force_flag=(); [ "$force" = true ] && force_flag=(--force)
hydra_force=(); [ "$force" = true ] && hydra_force=(force=true)
data_dirs=data/ident_train,data/ident_dev,data/ident_test,data/verif_train,data/verif_dev,data/verif_test

for t in $tasks; do
  case "$t" in ident|verif) ;; *) log "ERROR: --tasks '$tasks': unknown task '$t' (ident | verif)"; exit 1 ;; esac
done

log "$0 $*"
log_environment
log "corpus: $corpus_dir; work dir: $work_dir; tasks: $tasks; nj: $nj; max speakers: $max_speakers; $(uptime)"

if stage_wanted 0; then
  log "stage 0: speaker ID data directories and verification trials"
  if [ ! -d "$corpus_dir" ]; then
    log "ERROR: corpus directory '$corpus_dir' not found. Download speechocean762 (openslr.org resource 101)" \
        "and pass --corpus-dir, or place it at ../shared/corpora/speechocean762 beside the project."
    exit 1
  fi
  max_speakers_opt=(); [ "$max_speakers" -gt 0 ] && max_speakers_opt=(--max-speakers "$max_speakers")
  python "$root/local/prepare_sid_speechocean762.py" --corpus-dir "$corpus_dir" --out-dir data \
    "${max_speakers_opt[@]}" "${force_flag[@]}"
fi

if stage_wanted 1; then
  log "stage 1: fbank features of $data_dirs (nj=$nj)"
  # One process for all sets (a Hydra multirun runs them one after the other): saves a start-up per set.
  speechattn-compute-features -m hydra.sweep.dir=data/log/compute_features \
    data_dir="$data_dirs" nj="$nj" features=fbank progress=false \
    "${hydra_force[@]}"
fi

if stage_wanted 2; then
  log "stage 2: mean-only CMN statistics of the training sets"
  speechattn-compute-cmvn -m hydra.sweep.dir=data/log/compute_cmvn data_dir=data/ident_train,data/verif_train \
    cmvn=global_mean "${hydra_force[@]}"
fi

data_config() { echo "speechocean762_sid_$1"; }  # experiment -> speechattn/conf/data entry
test_set() { echo "${1}_test"; }

if stage_wanted 3; then
  pids=()
  for t in $tasks; do
    [ "$force" = true ] && rm -rf "exp/$t"
    # shellcheck disable=SC2086  # train_args is a list of Hydra overrides
    cmd=(speechattn-train --config-name train_sid data="$(data_config "$t")" exp_dir="exp/$t" $train_args)
    if [ "$nj" -ge 2 ] && [ "$(echo $tasks | wc -w)" -ge 2 ]; then
      mkdir -p "exp/$t"
      log "stage 3: training $t -> exp/$t in the background (log: exp/$t/train.log, console: exp/$t/train.out)"
      "${cmd[@]}" > "exp/$t/train.out" 2>&1 &
      pids+=("$!:$t")
    else
      log "stage 3: training $t -> exp/$t"
      "${cmd[@]}"
    fi
  done
  failed=0
  for p in "${pids[@]}"; do
    if wait "${p%%:*}"; then
      summary=$(grep -h -e 'best validation accuracy' -e 'is complete' "exp/${p#*:}/train.log" 2>/dev/null | tail -1 |
                sed 's/.*\] - //' || true)
      log "stage 3: ${p#*:} finished: ${summary:-see exp/${p#*:}/train.log}"
    else
      log "ERROR: training ${p#*:} failed; last lines of exp/${p#*:}/train.out:"; tail -20 "exp/${p#*:}/train.out" >&2
      failed=1
    fi
  done
  [ "$failed" = 0 ] || exit 1
fi

if stage_wanted 4; then
  for t in $tasks; do
    ts=$(test_set "$t")
    log "stage 4: embeddings and predictions of exp/$t on data/$ts -> exp/$t/decode_$ts"
    speechattn-infer task=sid exp_dir="exp/$t" data_dir="data/$ts" output_dir="exp/$t/decode_$ts" \
      "${hydra_force[@]}"
  done
fi

if stage_wanted 5; then
  for t in $tasks; do
    ts=$(test_set "$t")
    log "stage 5: scoring exp/$t on data/$ts -> exp/$t/scores"
    speechattn-score task=sid exp_dir="exp/$t" ref_dir="data/$ts" hyp_dir="exp/$t/decode_$ts" \
      output_dir="exp/$t/scores"
  done
  speechattn-results task=sid exp_root=exp output=RESULTS.md
  log "results table: $work_dir/RESULTS.md"
  cat RESULTS.md
fi
log "done; $(uptime)"
