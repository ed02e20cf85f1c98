#!/usr/bin/env python3
"""Stage 0 of recipes/timit/phone: Kaldi data dirs with per-frame phone labels from TIMIT (LDC93S1).

Reads TIMIT in LDC's layout, ``CORPUS/{TRAIN,TEST}/DR1..DR8/<SPEAKER>/<SENTENCE>.{WAV,PHN,WRD,TXT}``
(any letter case; ``.WAV`` NIST SPHERE or RIFF, read directly by soundfile: no sph2pipe), and writes

    OUT/train  OUT/dev  OUT/test     wav.scp, utt2spk, spk2utt, text, spk2gender, utt2num_frames,
                                     frame_labels (one phone of the 48-phone set per 10 ms frame)
    OUT/lang/phones.txt              the 48 training phones, SIL = 0 (TIMIT's sil, upper case like every symbol)
    OUT/lang/phones_39.txt           the 39 scoring classes, SIL = 0
    OUT/lang/score_map               training phone -> scoring class (Lee & Hon's 48 -> 39 folding): the phone
                                     scorer folds reference and hypothesis through it (speechattn/tasks/phone_scoring.py)

Sets, as in Kaldi's egs/timit/s5: ``train`` = all of ``TRAIN/`` (462 speakers, 3,696 sentences);
``dev`` = the standard 50-speaker development set (400 sentences); ``test`` = the 24-speaker core test set
(192 sentences); dev and test come from ``TEST/``. ``--test-set complete`` tests on all 168 ``TEST/``
speakers (1,344 sentences) instead; since those include the standard dev speakers, dev is then
``--complete-dev-speakers`` speakers held out of ``TRAIN/`` (a stable hash of the ID chooses them). The SA
sentences (read by every speaker) are excluded unless ``--include-sa``.

Frame labels: frame *i* (samples [160 i, 160 i + 400)) takes the ``.PHN`` phone under its centre, folded
61 -> 48; the glottal stop ``q``, which the standard recipe deletes, gives its samples to the preceding phone
(the following one at the start); samples no segment covers are SIL (counted).

Bad input. An utterance whose ``.PHN`` is missing, malformed (the error names file and line), ends after the
audio, or whose audio is unreadable or not 16 kHz is skipped: logged with the reason, counted per set, and
listed in ``OUT/<set>/skipped.txt``; ``--strict`` makes the first such problem an error instead. Two files or
folders whose names differ only in letter case are an error (which one is meant is unknown).

Example:
    python local/prepare_timit.py --corpus-dir /export/corpora/LDC/LDC93S1/timit/TIMIT --out-dir data
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

from speechattn.data.alignments import write_phone_table
from speechattn.data.kaldi_dir import KaldiDataError, write_table
from speechattn.data.phone_data_dir import SCORE_MAP, PreparedUtterance, SetStats, write_phone_data_dir
from speechattn.data.sid_splits import outputs_up_to_date, write_stamp
from speechattn.data.timit import (CORE_TEST_SPEAKERS, DEV_SPEAKERS, FOLD_61_TO_48, SAMPLE_RATE, SILENCE,
                                   PhnOverhangError, TimitUtterance, audio_format, data_symbol, fold_segments,
                                   frame_labels_from_phn, merge_glottal_stops, phone_table_39, phone_table_48,
                                   read_phn, read_txt, scan_corpus, scoring_map_48_to_39)
from speechattn.data.framing import num_frames

logger = logging.getLogger("prepare_timit")

SETS = ("train", "dev", "test")
STAMP_NAME = "prepare_timit"
STAMP_VERSION = 2  # 2: lang/score_map (was phone_map_48_39)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, required=True,
                        help="the TIMIT directory holding TRAIN/ and TEST/ (any letter case)")
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where train/, dev/, test/, lang/ go")
    parser.add_argument("--test-set", choices=("core", "complete"), default="core",
                        help="core: the 24-speaker core test set; complete: all TEST/ speakers")
    parser.add_argument("--complete-dev-speakers", type=int, default=50,
                        help="with --test-set complete: TRAIN/ speakers held out as dev")
    parser.add_argument("--include-sa", action="store_true", help="keep the SA1/SA2 dialect sentences")
    parser.add_argument("--max-utts-per-set", type=int, default=None,
                        help="keep at most this many utterances per set, for quick tests (None: all)")
    parser.add_argument("--nj", type=int, default=1, help="processes reading audio headers and .PHN files")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad utterance instead of skipping it")
    parser.add_argument("--force", action="store_true", help="redo even if the outputs are complete")
    return parser.parse_args(argv)


def choose_sets(utterances: list[TimitUtterance], args: argparse.Namespace) -> dict[str, list[TimitUtterance]]:
    """Split the scanned corpus into train/dev/test by speaker (see the module docstring)."""
    train_part = [u for u in utterances if u.part == "TRAIN"]
    test_part = [u for u in utterances if u.part == "TEST"]
    present = {u.speaker: u.part for u in utterances}
    for name, listed in (("core test", CORE_TEST_SPEAKERS), ("dev", DEV_SPEAKERS)):
        wrong_part = sorted(s for s in listed if present.get(s) == "TRAIN")
        if wrong_part:
            raise KaldiDataError(f"{args.corpus_dir}:0: {name} speakers {' '.join(wrong_part)} are under TRAIN/; "
                                 f"the standard lists name TEST/ speakers (is TRAIN/TEST swapped?)")
        missing = [s for s in listed if s not in present]
        if missing:
            logger.warning("%d of the %d %s speakers are not in this copy (first: %s)", len(missing), len(listed),
                           name, " ".join(missing[:5]))
    if args.test_set == "core":
        core, dev = set(CORE_TEST_SPEAKERS), set(DEV_SPEAKERS)
        sets = {"train": train_part, "dev": [u for u in test_part if u.speaker in dev],
                "test": [u for u in test_part if u.speaker in core]}
        unused = {u.speaker for u in test_part} - core - dev
        if unused:
            logger.info("%d TEST/ speakers in neither the core test set nor the dev set are not used (as in the "
                        "standard recipe; --test-set complete tests on all of them)", len(unused))
    else:
        train_speakers = sorted({u.speaker for u in train_part})
        if not 0 < args.complete_dev_speakers < len(train_speakers):
            raise ValueError(f"--complete-dev-speakers must be in [1, {len(train_speakers) - 1}] "
                             f"(TRAIN/ has {len(train_speakers)} speakers), got {args.complete_dev_speakers}")
        ranked = sorted(train_speakers, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        dev = set(ranked[:args.complete_dev_speakers])
        sets = {"train": [u for u in train_part if u.speaker not in dev],
                "dev": [u for u in train_part if u.speaker in dev], "test": test_part}
    for name, members in sets.items():
        if not members:
            raise KaldiDataError(f"{args.corpus_dir}:0: no utterance for the {name} set (speakers of the "
                                 f"standard lists missing from this copy?)")
    return sets


def prepare_utterance(utterance: TimitUtterance) -> PreparedUtterance:
    """Read one sentence's audio header and ``.PHN`` into frame labels (runs in worker processes)."""
    result = PreparedUtterance(utterance.utt_id, utterance.speaker, wav=str(utterance.wav.resolve()))

    def skip(reason: str, message: str) -> PreparedUtterance:
        result.skip_reason, result.skip_message = reason, message
        return result

    try:
        audio_format(utterance.wav)
        info = sf.info(str(utterance.wav))
    except (KaldiDataError, sf.LibsndfileError, RuntimeError) as e:
        return skip("unreadable audio", str(e))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        return skip("not 16 kHz mono", f"{utterance.wav}:0: {info.samplerate} Hz, {info.channels} channel(s); "
                                       f"TIMIT is 16 kHz mono")
    result.num_frames = num_frames(info.frames, SAMPLE_RATE)
    if result.num_frames == 0:
        return skip("too short", f"{utterance.wav}:0: {info.frames} samples, shorter than one 25 ms frame")
    if utterance.phn is None:
        expected = utterance.wav.with_name(utterance.wav.name.split(".")[0] + ".PHN")
        return skip("missing .PHN", f"{expected}:0: phone transcription missing (no .PHN beside the audio)")
    try:
        segments = read_phn(utterance.phn, num_samples=info.frames)
    except PhnOverhangError as e:
        return skip(".PHN ends after the audio", str(e))
    except KaldiDataError as e:
        return skip("bad .PHN", str(e))
    segments, glottal_stops = merge_glottal_stops(segments)
    labels = frame_labels_from_phn(fold_segments(segments, FOLD_61_TO_48), result.num_frames, fill=SILENCE)
    result.labels = [data_symbol(p) for p in labels]
    result.filled_frames = labels.num_filled
    if glottal_stops:
        logger.debug("%s: %d glottal stop(s) merged into neighbouring phones", utterance.phn, glottal_stops)
    if utterance.txt is not None:
        try:
            result.text = read_txt(utterance.txt)
        except KaldiDataError as e:
            logger.warning("%s (transcript left empty)", e)
    return result


def prepare_set(name: str, members: list[TimitUtterance], args: argparse.Namespace) -> SetStats:
    excluded: Counter = Counter()
    if not args.include_sa:
        excluded["SA sentence (excluded by default)"] = sum(u.is_sa for u in members)
        members = [u for u in members if not u.is_sa]
    if args.max_utts_per_set is not None and len(members) > args.max_utts_per_set:
        excluded["over --max-utts-per-set"] = len(members) - args.max_utts_per_set
        members = members[:args.max_utts_per_set]
    if args.nj > 1:
        with ProcessPoolExecutor(max_workers=args.nj) as pool:
            results = list(pool.map(prepare_utterance, members, chunksize=32))
    else:
        results = [prepare_utterance(u) for u in members]
    genders = {u.speaker: u.speaker[0].lower() for u in members}
    return write_phone_data_dir(args.out_dir / name, results, strict=args.strict, spk2gender=genders,
                                skipped=excluded)


def write_lang(lang_dir: Path) -> None:
    write_phone_table(lang_dir / "phones.txt", phone_table_48())
    write_phone_table(lang_dir / "phones_39.txt", phone_table_39())
    write_table(lang_dir / SCORE_MAP, scoring_map_48_to_39())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nj < 1 or (args.max_utts_per_set is not None and args.max_utts_per_set < 1):
        logger.error("--nj and --max-utts-per-set must be >= 1")
        return 1
    corpus_dir = args.corpus_dir.resolve()
    options = {"version": STAMP_VERSION, "corpus_dir": str(corpus_dir), "test_set": args.test_set,
               "complete_dev_speakers": args.complete_dev_speakers, "include_sa": args.include_sa,
               "max_utts_per_set": args.max_utts_per_set}
    if not args.force and outputs_up_to_date(args.out_dir, SETS, STAMP_NAME, options,
                                             extra_files=("lang/phones.txt", f"lang/{SCORE_MAP}",
                                                          *(f"{s}/frame_labels" for s in SETS))):
        logger.info("%s: TIMIT data dirs up to date, nothing to do (--force to redo)", args.out_dir)
        return 0
    try:
        utterances = scan_corpus(corpus_dir)
        logger.info("%s: %d sentences of %d speakers", corpus_dir, len(utterances),
                    len({u.speaker for u in utterances}))
        sets = choose_sets(utterances, args)
        for name in SETS:
            logger.info("%s", prepare_set(name, sets[name], args).summary(name))
        write_lang(args.out_dir / "lang")
    except (KaldiDataError, ValueError) as e:
        logger.error("%s", e)
        return 1
    write_stamp(args.out_dir, STAMP_NAME, options)
    logger.info("wrote %s (train/dev/test, lang/)", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
