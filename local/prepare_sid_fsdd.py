#!/usr/bin/env python3
"""Speaker identification data dirs for the Free Spoken Digit Dataset (FSDD).

FSDD has 6 speakers, which is too few for speaker verification (no disjoint set of unseen test speakers
that would give meaningful trials), so only closed-set identification splits are written:
``ident_train`` (+ ``speakers.txt``), ``ident_dev``, ``ident_test``, by the per-speaker rule of
``speechattn/data/sid_splits.py`` (500 recordings per speaker -> 400/50/50).

Files are ``DIGIT_SPEAKER_INDEX.flac`` (or ``.wav``) under ``--corpus-dir`` (or its ``recordings/``);
utterance IDs are ``SPEAKER_DIGIT_INDEX`` so they sort by speaker as Kaldi expects. Other files are
skipped with a logged count. The audio is 8 kHz; it is resampled to 16 kHz when loaded
(``speechattn.data.audio.load_audio``), so ``utt2num_frames`` counts 16 kHz frames. Idempotent
(``--force`` redoes a finished run).

Example:
    python local/prepare_sid_fsdd.py --out-dir data
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from speechattn.bin._hydra import one_line_errors
from speechattn.data.audio import AudioError
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.sid_splits import (
    DEFAULT_SEED,
    measure_utterances,
    outputs_up_to_date,
    split_identification,
    write_sid_data_dir,
    write_stamp,
)

logger = logging.getLogger("prepare_sid_fsdd")

DEFAULT_CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "fsdd"
DATA_DIRS = ("ident_train", "ident_dev", "ident_test")
FILE_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9]+)_(?P<index>[0-9]+)\.(?:flac|wav)$", re.IGNORECASE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR,
                        help="FSDD root (the recordings are in it or in its recordings/ subdirectory)")
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where the data dirs are written")
    parser.add_argument("--max-speakers", type=int, default=None,
                        help="use only the first N speakers (sorted), for quick tests")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the utterance hashing")
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity")
    return parser.parse_args(argv)


def recordings_dir(corpus_dir: Path) -> Path:
    """``corpus_dir/recordings`` if it exists, else ``corpus_dir``; FileNotFoundError if neither exists."""
    if (corpus_dir / "recordings").is_dir():
        return corpus_dir / "recordings"
    if corpus_dir.is_dir():
        return corpus_dir
    raise FileNotFoundError(f"FSDD corpus not found at {corpus_dir}; pass --corpus-dir")


def find_recordings(directory: Path, max_speakers: int | None) -> list[tuple[str, str, str, str]]:
    """``(utt, speaker, absolute_path, where)`` for every ``DIGIT_SPEAKER_INDEX`` audio file, sorted."""
    entries, skipped = [], []
    for path in sorted(directory.iterdir()):
        match = FILE_NAME.match(path.name)
        if not match or not path.is_file():
            skipped.append(path.name)
            continue
        speaker = match["speaker"]
        entries.append((f"{speaker}_{match['digit']}_{match['index']}", speaker, str(path.resolve()), str(path)))
    if skipped:
        logger.warning("%s: skipped %d file(s) not named DIGIT_SPEAKER_INDEX.flac|wav: %s", directory,
                       len(skipped), " ".join(skipped[:10]))
    if not entries:
        raise FileNotFoundError(f"{directory}: no DIGIT_SPEAKER_INDEX.flac|wav recordings found")
    speakers = sorted({speaker for _, speaker, _, _ in entries})
    if max_speakers is not None:
        keep = set(speakers[:max_speakers])
        entries = [entry for entry in entries if entry[1] in keep]
    return entries


def prepare(args: argparse.Namespace) -> None:
    directory = recordings_dir(args.corpus_dir.resolve())
    options = {"corpus_dir": str(directory), "max_speakers": args.max_speakers, "seed": args.seed}
    if not args.force and outputs_up_to_date(args.out_dir, DATA_DIRS, "prepare_sid_fsdd", options,
                                             extra_files=("ident_train/speakers.txt",)):
        logger.info("%s: FSDD speaker ID data dirs up to date, nothing to do (--force to rebuild)", args.out_dir)
        return
    utterances = measure_utterances(find_recordings(directory, args.max_speakers))
    spk2utt: dict[str, list[str]] = {}
    for utt, u in utterances.items():
        spk2utt.setdefault(u.speaker, []).append(utt)
    logger.info("FSDD: %d recordings of %d speakers (8 kHz, counted as 16 kHz frames: resampled at load time). "
                "Too few speakers for verification: writing identification splits only.",
                len(utterances), len(spk2utt))
    split = split_identification(spk2utt, args.seed)
    for name, part, with_speakers in (("ident_train", split.train, True), ("ident_dev", split.dev, False),
                                      ("ident_test", split.test, False)):
        write_sid_data_dir(args.out_dir / name, {utt: utterances[utt] for utt in part}, with_speakers=with_speakers)
        logger.info("%s: %d utterances, %d speakers", args.out_dir / name, len(part), len(set(part.values())))
    write_stamp(args.out_dir, "prepare_sid_fsdd", options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        prepare(args)
    except (FileNotFoundError, KaldiDataError, AudioError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main)())
