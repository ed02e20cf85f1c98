#!/usr/bin/env python3
"""Stage 0 of recipes/voxceleb1/sid: speaker identification and verification data dirs from VoxCeleb1.

Reads VoxCeleb1 as it unpacks (dev and test parts merged under ``wav/``)::

    CORPUS/wav/idNNNNN/<video>/NNNNN.wav   16 kHz audio
    CORPUS/iden_split.txt                  "1|2|3 idNNNNN/<video>/NNNNN.wav": identification train / val / test
    CORPUS/veri_test2.txt                  "1|0 ENROL TEST": the cleaned Vox1-O trial list (target / non-target)
    CORPUS/vox1_meta.csv                   optional, tab-separated: VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set

and writes under ``--out-dir`` the same data dirs as the other speaker recipes (``local/prepare_sid_*.py``):

* ``ident_train`` / ``ident_dev`` / ``ident_test``: the iden split's sets 1 / 2 / 3 (1,251 speakers in the
  real corpus: 138,361 / 6,904 / 8,251 utterances); ``ident_train/speakers.txt`` is the closed set.
* ``verif_train`` / ``verif_dev``: every utterance under ``wav/`` of the speakers that appear in **no** trial
  (for Vox1-O: the 1,211 dev-part speakers), with ``held_out_count`` utterances per speaker moved to dev for
  model selection (``speechattn/data/sid_splits.py``); ``verif_train/speakers.txt``.
* ``verif_test``: the utterances named in the trial list, and ``verif_test/trials`` (``LABEL ENROL TEST``
  with our utterance IDs, in the list's order).

Utterance IDs are ``idNNNNN-<video>-NNNNN`` (Kaldi's VoxCeleb recipe), speakers ``idNNNNN``. Every
directory has ``wav.scp``, ``utt2spk``, ``spk2utt``, ``utt2num_frames`` (from the headers, ``--nj``
processes) and ``spk2gender`` when the meta file is there.

Bad input: a line of iden_split.txt or of the trial list that is malformed, has an unknown set number or
label, or names a file that does not exist under ``wav/`` is an error naming the file and line (these lists
define the benchmark: a silently shortened list would give numbers nobody can compare with). Audio shorter
than one 25 ms window is skipped and counted; if a trial names such a file it is an error.

Example:
    python local/prepare_voxceleb1.py --corpus-dir /data/voxceleb1 --out-dir data
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

from speechattn.data.kaldi_dir import KaldiDataError, read_fields, read_text_lines
from speechattn.data.sid_splits import (DEFAULT_SEED, Utterance, outputs_up_to_date, split_train_dev,
                                        write_sid_data_dir, write_stamp)
from speechattn.data.framing import num_frames
from speechattn.data.trials import Trial, read_numbered_trials, write_trials

logger = logging.getLogger("prepare_voxceleb1")

DATA_DIRS = ("ident_train", "ident_dev", "ident_test", "verif_train", "verif_dev", "verif_test")
IDEN_SETS = {"1": "ident_train", "2": "ident_dev", "3": "ident_test"}
STAMP_NAME = "prepare_voxceleb1"
STAMP_VERSION = 1
SAMPLE_RATE = 16000
_SPEAKER = re.compile(r"^id\d+$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, required=True, help="VoxCeleb1 root, with wav/ and the lists")
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where the data dirs are written")
    parser.add_argument("--iden-split", default="iden_split.txt", help="identification split (in --corpus-dir)")
    parser.add_argument("--trials", default="veri_test2.txt",
                        help="trial list(s) in --corpus-dir, space-separated (e.g. 'veri_test2.txt list_test_hard2.txt'); "
                             "verification trains on speakers of no listed trial")
    parser.add_argument("--meta", default="vox1_meta.csv", help="speaker meta file in --corpus-dir (optional)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the verif_train/verif_dev split")
    parser.add_argument("--nj", type=int, default=4, help="processes reading audio headers")
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    return parser.parse_args(argv)


def utterance_id(relative: str) -> str:
    """``id10001/1zcIwhmdeo4/00001.wav`` -> ``id10001-1zcIwhmdeo4-00001``."""
    return relative[: -len(".wav")].replace("/", "-")


def scan_wav(wav_dir: Path) -> dict[str, Path]:
    """``{"idNNNNN/<video>/NNNNN.wav": absolute path}`` of every file under ``wav/`` (three levels)."""
    if not wav_dir.is_dir():
        raise KaldiDataError(f"{wav_dir}:0: VoxCeleb1 wav/ directory not found (is --corpus-dir the unpacked root?)")
    files: dict[str, Path] = {}
    ignored = 0
    with os.scandir(wav_dir) as speakers:
        for speaker in sorted(speakers, key=lambda e: e.name):
            if not (speaker.is_dir() and _SPEAKER.match(speaker.name)):
                ignored += 1
                continue
            with os.scandir(speaker.path) as videos:
                for video in sorted(videos, key=lambda e: e.name):
                    if not video.is_dir():
                        ignored += 1
                        continue
                    with os.scandir(video.path) as entries:
                        for entry in sorted(entries, key=lambda e: e.name):
                            if entry.name.endswith(".wav") and entry.is_file():
                                files[f"{speaker.name}/{video.name}/{entry.name}"] = Path(entry.path).resolve()
                            else:
                                ignored += 1
    if ignored:
        logger.warning("%s: %d entries that are not wav/idNNNNN/<video>/NNNNN.wav ignored", wav_dir, ignored)
    if not files:
        raise KaldiDataError(f"{wav_dir}:0: no idNNNNN/<video>/NNNNN.wav files")
    return files


def _check_listed(path: Path, lineno: int, relative: str, files: dict[str, Path], wav_dir: Path) -> None:
    if relative not in files:
        raise KaldiDataError(f"{path}:{lineno}: file '{relative}' does not exist under {wav_dir}")


def read_iden_split(path: Path, files: dict[str, Path], wav_dir: Path) -> dict[str, list[str]]:
    """``{"ident_train"|"ident_dev"|"ident_test": [relative paths]}``; errors name file and line."""
    sets: dict[str, list[str]] = {name: [] for name in IDEN_SETS.values()}
    seen: dict[str, int] = {}
    for lineno, (number, relative) in read_fields(path, 2, "'SET idNNNNN/<video>/NNNNN.wav'",
                                                  what="identification split"):
        if number not in IDEN_SETS:
            raise KaldiDataError(f"{path}:{lineno}: unknown set number '{number}' (1 = train, 2 = val, 3 = test)")
        if relative in seen:
            raise KaldiDataError(f"{path}:{lineno}: '{relative}' is listed twice (first on line {seen[relative]})")
        _check_listed(path, lineno, relative, files, wav_dir)
        seen[relative] = lineno
        sets[IDEN_SETS[number]].append(relative)
    return sets


def read_trial_list(path: Path, files: dict[str, Path], wav_dir: Path) -> list[Trial]:
    """``LABEL ENROL TEST`` lines (:func:`speechattn.data.trials.read_numbered_trials`; the two utterances
    are paths relative to wav/); a file missing under wav/ or a label that contradicts the speaker IDs is an
    error naming file and line."""
    trials: list[Trial] = []
    for lineno, trial in read_numbered_trials(path, what="trial list"):
        for relative in (trial.utt1, trial.utt2):
            _check_listed(path, lineno, relative, files, wav_dir)
        if (trial.utt1.split("/")[0] == trial.utt2.split("/")[0]) != trial.target:
            raise KaldiDataError(f"{path}:{lineno}: label {trial.label} contradicts the speaker IDs of "
                                 f"'{trial.utt1}' and '{trial.utt2}'")
        trials.append(trial)
    if not trials:
        raise KaldiDataError(f"{path}:0: no trials")
    return trials


def read_meta(path: Path) -> dict[str, str]:
    """``vox1_meta.csv`` -> ``{speaker: "m"/"f"}`` (tab-separated, header line first)."""
    genders: dict[str, str] = {}
    for lineno, line in read_text_lines(path, what="speaker metadata"):
        fields = [field.strip() for field in line.split("\t")]
        if lineno == 1 or not line.strip():
            continue  # header: VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set
        if len(fields) < 3 or not _SPEAKER.match(fields[0]) or fields[2].lower() not in ("m", "f"):
            raise KaldiDataError(f"{path}:{lineno}: expected 'idNNNNN<TAB>NAME<TAB>m|f<TAB>...', "
                                 f"got {line.strip()!r}")
        genders[fields[0]] = fields[2].lower()
    return genders


def _frames_of(path: Path) -> int | str:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        return f"{path}:0: cannot read the audio header: {e}"
    if info.samplerate != SAMPLE_RATE:
        # Feature extraction resamples, so count frames at 16 kHz as it will see them.
        return num_frames(-(-info.frames * SAMPLE_RATE // info.samplerate), SAMPLE_RATE)
    return num_frames(info.frames, SAMPLE_RATE)


def measure(files: dict[str, Path], wanted: set[str], nj: int) -> dict[str, Utterance]:
    """``{relative: Utterance}`` of ``wanted`` with 16 kHz frame counts; unreadable audio is an error,
    audio shorter than one window is left out (logged, counted)."""
    relatives = sorted(wanted)
    paths = [files[r] for r in relatives]
    if nj > 1:
        with ProcessPoolExecutor(max_workers=nj) as pool:
            counts = list(pool.map(_frames_of, paths, chunksize=256))
    else:
        counts = [_frames_of(p) for p in paths]
    measured: dict[str, Utterance] = {}
    too_short = []
    for relative, path, frames in zip(relatives, paths, counts):
        if isinstance(frames, str):
            raise KaldiDataError(frames)
        if frames == 0:
            too_short.append(relative)
            continue
        measured[relative] = Utterance(relative.split("/")[0], str(path), frames)
    if too_short:
        logger.warning("%d file(s) shorter than one 25 ms window left out: %s", len(too_short), " ".join(too_short[:5]))
    return measured


def prepare(args: argparse.Namespace) -> None:
    corpus_dir = args.corpus_dir.resolve()
    wav_dir = corpus_dir / "wav"
    trial_names = args.trials.split()
    options = {"version": STAMP_VERSION, "corpus_dir": str(corpus_dir), "iden_split": args.iden_split,
               "trials": trial_names, "meta": args.meta, "seed": args.seed}
    if not args.force and outputs_up_to_date(args.out_dir, DATA_DIRS, STAMP_NAME, options,
                                             extra_files=("ident_train/speakers.txt", "verif_train/speakers.txt",
                                                          "verif_test/trials")):
        logger.info("%s: VoxCeleb1 data dirs up to date, nothing to do (--force to rebuild)", args.out_dir)
        return
    files = scan_wav(wav_dir)
    logger.info("%s: %d files of %d speakers", wav_dir, len(files), len({r.split("/")[0] for r in files}))
    iden = read_iden_split(corpus_dir / args.iden_split, files, wav_dir)
    trials = [t for name in trial_names for t in read_trial_list(corpus_dir / name, files, wav_dir)]
    meta_path = corpus_dir / args.meta
    genders = read_meta(meta_path) if meta_path.is_file() else {}
    if not genders:
        logger.info("%s not found: no spk2gender", meta_path)

    trial_files = {r for t in trials for r in (t.utt1, t.utt2)}
    trial_speakers = {r.split("/")[0] for r in trial_files}
    verif_pool = {r for r in files if r.split("/")[0] not in trial_speakers}
    if not verif_pool:
        raise KaldiDataError(f"{corpus_dir}:0: every speaker under wav/ appears in a trial: no speaker left to "
                             f"train verification on")
    measured = measure(files, set().union(*iden.values()) | trial_files | verif_pool, args.nj)
    missing_trial_audio = sorted(trial_files - set(measured))
    if missing_trial_audio:
        raise KaldiDataError(f"{corpus_dir / trial_names[0]}:0: trials name audio shorter than one frame: "
                             f"{' '.join(missing_trial_audio[:5])}")
    tables = {"spk2gender": genders} if genders else {}

    def subset(relatives) -> dict[str, Utterance]:
        return {utterance_id(r): measured[r] for r in relatives if r in measured}

    out = args.out_dir
    ident_train_speakers = {r.split("/")[0] for r in iden["ident_train"]}
    for name in ("ident_dev", "ident_test"):
        unseen = sorted({r.split("/")[0] for r in iden[name]} - ident_train_speakers)
        if unseen:
            raise KaldiDataError(f"{corpus_dir / args.iden_split}:0: speakers of set {name} never in set 1 "
                                 f"(identification is closed-set): {' '.join(unseen[:5])}")
    for name in ("ident_train", "ident_dev", "ident_test"):
        part = subset(iden[name])
        write_sid_data_dir(out / name, part, with_speakers=(name == "ident_train"), speaker_tables=tables)
        logger.info("%s: %d utterances, %d speakers", out / name, len(part), len({u.speaker for u in part.values()}))

    pool = subset(verif_pool)
    spk2utt: dict[str, list[str]] = {}
    for utt, u in pool.items():
        spk2utt.setdefault(u.speaker, []).append(utt)
    verif_train, verif_dev = split_train_dev(spk2utt, args.seed)
    write_sid_data_dir(out / "verif_train", {u: pool[u] for u in verif_train}, with_speakers=True,
                       speaker_tables=tables)
    write_sid_data_dir(out / "verif_dev", {u: pool[u] for u in verif_dev}, speaker_tables=tables)
    write_sid_data_dir(out / "verif_test", subset(trial_files), speaker_tables=tables)
    write_trials(out / "verif_test" / "trials", (Trial(t.label, utterance_id(t.utt1), utterance_id(t.utt2))
                                                 for t in trials))
    num_target = sum(t.target for t in trials)
    logger.info("verification: trained on %d speakers (%d train / %d dev utterances) that appear in no trial; "
                "%d trials (%d target, %d non-target) over %d utterances of %d speakers", len(spk2utt),
                len(verif_train), len(verif_dev), len(trials), num_target, len(trials) - num_target,
                len(trial_files), len(trial_speakers))
    write_stamp(out, STAMP_NAME, options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nj < 1:
        logger.error("--nj must be >= 1")
        return 1
    try:
        prepare(args)
    except (KaldiDataError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
