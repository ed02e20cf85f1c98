#!/usr/bin/env bash
# The speaker part of the recipe template, sourced by recipes/<corpus>/sid/run.sh instead of
# utils/recipe.sh (which it sources): the options every speaker recipe has, checked before anything runs,
# and what they put into the stages (docs/sid.md, "Recipe options"):
#
#   option          training (stage 3)                                   inference (4) / scoring (5)
#   --augment       augment=speaker|speaker_musan make_rir_set=false     -
#   --musan-dir     augment.musan_dir=DIR (implies speaker_musan)        -
#   --rir-dir       augment.reverb.rir_dir=DIR (else data/rirs, made by  -
#                   the unit "stage 3 rirs": local/make_rir_set.py)
#   --average-best  trainer.average_best=N                               -
#   --embedding     -                                                    speechattn-infer embedding=crops
#   --asnorm        -                                                    speechattn-score asnorm=false
#
# Options that change training change the experiment's name, so a run with them sits beside the default
# one (as the phone recipes' --speed-perturb trains into exp/<model>_sp): exp/<task>[_aug|_musan][_rirs]
# [_avgN], e.g. exp/ident_aug (--augment speaker), exp/verif_musan_rirs_avg3. Inference and scoring options
# keep the name; their stamps redo inference and scoring (and only those) in place when they change.
# Only values other than the defaults are passed on, so the default commands (and stamps) are those of a
# recipe without these options.
#
# Options of every speaker recipe (run.sh --help lists them after the recipe's own):
augment=none            # waveform augmentation of the training crops: none | speaker (speed, synthetic reverb, noise and babble from the training set) | speaker_musan (MUSAN + reverb; needs --musan-dir) -> exp/<task>_aug, _musan
musan_dir=              # MUSAN directory (music/ noise/ speech/, each <collection>/*.wav; openslr.org/17); implies --augment speaker_musan
rir_dir=                # RIRS_NOISES directory (simulated_rirs/<room>/rir_list; openslr.org/28) for reverberation instead of the synthetic set data/rirs -> exp/<task>_..._rirs
rir_rooms=10            # synthetic RIR set data/rirs (augmentation without --rir-dir): rooms per size class, 3 classes x 5 positions each (local/make_rir_set.py --num-rooms)
average_best=0          # N >= 2: model.pt = average of the weights of the N best epochs by the dev metric (trainer.average_best) -> exp/<task>_avgN
embedding=full          # test embeddings: full (the whole recording) | crops (mean of 3 s crops) (speechattn-infer embedding=)
asnorm=true             # verification: also adaptive s-norm scores beside the raw ones (speechattn-score asnorm=)
_sa_part_files=("${BASH_SOURCE[0]}")
. "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"

# One line and exit 1: a bad value or combination of the options above (before anything runs).
_sid_fail() { echo "$0: $*" >&2; exit 1; }

case "$augment" in none|speaker|speaker_musan) ;; *) _sid_fail "--augment '$augment': none | speaker | speaker_musan" ;; esac
case "$embedding" in full|crops) ;; *) _sid_fail "--embedding '$embedding': full | crops" ;; esac
if [ "$average_best" -lt 0 ] || [ "$average_best" -eq 1 ]; then
  _sid_fail "--average-best $average_best: 0 (off) or the number N >= 2 of best epochs to average"
fi
if [ "$rir_rooms" -lt 1 ]; then _sid_fail "--rir-rooms $rir_rooms: needs at least 1 room per size class"; fi
if [ -n "$musan_dir" ]; then
  case "$augment" in
    none) augment=speaker_musan ;;
    speaker) _sid_fail "--musan-dir with --augment speaker: MUSAN is used by --augment speaker_musan (the default with --musan-dir)" ;;
  esac
  [ -d "$musan_dir" ] || _sid_fail "--musan-dir $musan_dir: directory not found (MUSAN: music/ noise/ speech/, openslr.org/17)"
  for _sid_part in music noise speech; do
    if [ ! -d "$musan_dir/$_sid_part" ] || [ -z "$(find "$musan_dir/$_sid_part" -name '*.wav' -print -quit)" ]; then
      _sid_fail "--musan-dir $musan_dir: not MUSAN's layout: no $_sid_part/<collection>/*.wav (expected music/, noise/, speech/ each with <collection>/*.wav, openslr.org/17)"
    fi
  done
  musan_dir="$(cd "$musan_dir" && pwd)"  # training runs in the work dir
elif [ "$augment" = speaker_musan ]; then
  _sid_fail "--augment speaker_musan needs --musan-dir DIR (MUSAN: music/ noise/ speech/, openslr.org/17)"
fi
if [ -n "$rir_dir" ]; then
  [ "$augment" != none ] || _sid_fail "--rir-dir is used by augmentation: add --augment speaker (or --musan-dir DIR)"
  [ -d "$rir_dir" ] || _sid_fail "--rir-dir $rir_dir: directory not found (RIRS_NOISES, openslr.org/28)"
  if ! compgen -G "$rir_dir/simulated_rirs/*/rir_list" >/dev/null; then
    _sid_fail "--rir-dir $rir_dir: not the RIRS_NOISES layout: no simulated_rirs/<room>/rir_list (openslr.org/28)"
  fi
  rir_dir="$(cd "$rir_dir" && pwd)"
fi

# The experiments' names and the Hydra overrides of the stages.
_sid_suffix=""
case "$augment" in speaker) _sid_suffix=_aug ;; speaker_musan) _sid_suffix=_musan ;; esac
if [ -n "$rir_dir" ]; then _sid_suffix+=_rirs; fi
if [ "$average_best" -ge 2 ]; then _sid_suffix+="_avg$average_best"; fi
exp_of() { echo "exp/$1$_sid_suffix"; }
if [ "$augment" != none ]; then
  train_overrides+=(augment="$augment" make_rir_set=false augment.reverb.rir_dir="${rir_dir:-data/rirs}")
  if [ -n "$musan_dir" ]; then train_overrides+=(augment.musan_dir="$musan_dir"); fi
  if [ -z "$rir_dir" ]; then train_inputs="data/rirs/.stage.rirs"; fi
fi
if [ "$average_best" -ge 2 ]; then train_overrides+=(trainer.average_best="$average_best"); fi
if [ "$embedding" != full ]; then infer_overrides+=(embedding="$embedding"); fi
if [ "$asnorm" != true ]; then score_overrides+=(asnorm=false); fi

# Stage 3 starts with the synthetic RIR set when augmentation reverberates without --rir-dir: made once
# into data/rirs (shared by the experiments), redone when its options change. 16 kHz whatever the corpus's
# rate: the augmenter works on the audio as loaded, which load_audio resamples to 16 kHz (FSDD's 8 kHz
# too), and refuses RIRs at another rate.
before_train() {
  if [ "$augment" = none ] || [ -n "$rir_dir" ]; then return 0; fi
  stage_unit "stage 3 rirs data/rirs" data/rirs/.stage.rirs --force-arg --force -- \
    python "$root/local/make_rir_set.py" data/rirs --num-rooms "$rir_rooms" --sample-rate 16000 --nj "$nj"
}

# The speaker recipes' experiments ident and/or verif (--tasks, checked), their sets, fbank features and
# global mean normalisation from each task's training set. $1: the --tasks value.
sid_ident_verif() {
  local t
  for t in $1; do
    case "$t" in ident|verif) ;; *) log "ERROR: --tasks '$1': unknown task '$t' (ident | verif)"; exit 1 ;; esac
  done
  experiments="$1"
  feature_sets="ident_train ident_dev ident_test verif_train verif_dev verif_test"
  feature_args=(features=fbank progress=false)
  cmvn_sets="ident_train verif_train"
  cmvn_args=(cmvn=global_mean)
}
