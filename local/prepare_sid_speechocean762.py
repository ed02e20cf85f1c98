#!/usr/bin/env python3
"""Speaker identification and verification data dirs for speechocean762.

Writes under ``--out-dir`` (rules in ``speechattn/data/sid_splits.py``):

* ``ident_train``, ``ident_dev``, ``ident_test``: closed-set identification over all speakers (train/ and
  test/ of the corpus together; 250 speakers x 10 utterances -> 8/1/1 each); ``ident_train/speakers.txt``
  is the closed set (sorted; line index = class index).
* ``verif_train``, ``verif_dev``: the corpus's train/ speakers only (9/1 per speaker, dev for model
  selection); ``verif_train/speakers.txt``.
* ``verif_test``: all utterances of the corpus's test/ speakers (never seen in training) and
  ``verif_test/trials`` (``LABEL UTT1 UTT2``; all target pairs + ``--nontarget-ratio`` x as many
  seeded non-target pairs).

Each dir has ``wav.scp`` (absolute paths), ``utt2spk``, ``spk2utt``, ``utt2num_frames`` (16 kHz, 25/10 ms),
``spk2gender``/``spk2age`` when the corpus has them. Idempotent: a finished run with the same options is
not redone (``--force`` redoes it).

Example:
    python local/prepare_sid_speechocean762.py --out-dir data
    python local/prepare_sid_speechocean762.py --out-dir /tmp/data --max-speakers 5   # quick check
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechattn.bin._hydra import one_line_errors
from speechattn.data.audio import AudioError
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_text_lines
from speechattn.data.sid_splits import (
    DEFAULT_SEED,
    Utterance,
    make_trials,
    measure_utterances,
    outputs_up_to_date,
    split_identification,
    split_train_dev,
    write_sid_data_dir,
    write_stamp,
)
from speechattn.data.trials import write_trials

logger = logging.getLogger("prepare_sid_speechocean762")

DEFAULT_CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "speechocean762"
CORPUS_PARTS = ("train", "test")
DATA_DIRS = ("ident_train", "ident_dev", "ident_test", "verif_train", "verif_dev", "verif_test")
SPEAKER_TABLES = ("spk2gender", "spk2age")
AUDIO_SUFFIXES = (".flac", ".wav", ".WAV", ".FLAC")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR,
                        help="speechocean762 root (with train/, test/, WAVE/)")
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where the data dirs are written")
    parser.add_argument("--max-speakers", type=int, default=None,
                        help="use only the first N speakers (sorted) of train/ and of test/ each, for quick tests")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the utterance and trial hashing")
    parser.add_argument("--nontarget-ratio", type=float, default=5.0,
                        help="non-target trials per target trial in verif_test/trials")
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity")
    return parser.parse_args(argv)


def resolve_audio(corpus_dir: Path, value: str, where: str) -> Path:
    """Absolute audio path of a wav.scp value (relative to the corpus root); a .flac/.WAV sibling is
    accepted when the listed file is missing, since the corpus may ship either."""
    path = Path(value)
    if not path.is_absolute():
        path = corpus_dir / path
    if path.is_file():
        return path.resolve()
    for suffix in AUDIO_SUFFIXES:
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix).resolve()
    raise KaldiDataError(f"{where}: audio file not found: {path} (also tried {', '.join(AUDIO_SUFFIXES)})")


def read_part(corpus_dir: Path, part: str, max_speakers: int | None) -> list[tuple[str, str, str, str]]:
    """``(utt, speaker, absolute_wav, "wav.scp:line")`` of one corpus part, restricted to ``max_speakers``."""
    part_dir = corpus_dir / part
    wav_scp, utt2spk_path = part_dir / "wav.scp", part_dir / "utt2spk"
    utt2spk = read_table(utt2spk_path, check_sorted=False)
    speakers = sorted(set(utt2spk.values()))
    if max_speakers is not None:
        speakers = speakers[:max_speakers]
    keep = set(speakers)
    entries = []
    for lineno, line in read_text_lines(wav_scp):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        where = f"{wav_scp}:{lineno}"
        if len(fields) != 2:
            raise KaldiDataError(f"{where}: expected 'UTT PATH', got {line.strip()!r}")
        utt, value = fields[0], fields[1].strip()
        if value.endswith("|"):
            raise KaldiDataError(f"{where}: shell pipes are not supported here: {value}")
        if utt not in utt2spk:
            raise KaldiDataError(f"{where}: utterance '{utt}' has no speaker in {utt2spk_path}")
        if utt2spk[utt] in keep:
            entries.append((utt, utt2spk[utt], str(resolve_audio(corpus_dir, value, where)), where))
    logger.info("%s: %d utterances of %d speakers", part_dir, len(entries), len(keep))
    return entries


def read_speaker_tables(corpus_dir: Path) -> dict[str, dict[str, str]]:
    """spk2gender / spk2age of train/ and test/ merged (absent tables are skipped)."""
    tables: dict[str, dict[str, str]] = {}
    for name in SPEAKER_TABLES:
        for part in CORPUS_PARTS:
            if (corpus_dir / part / name).is_file():
                tables.setdefault(name, {}).update(read_table(corpus_dir / part / name, check_sorted=False))
    return tables


def check_corpus(corpus_dir: Path) -> None:
    missing = [str(corpus_dir / part / name) for part in CORPUS_PARTS for name in ("wav.scp", "utt2spk")
               if not (corpus_dir / part / name).is_file()]
    if missing:
        raise FileNotFoundError(f"speechocean762 corpus not found at {corpus_dir} (missing: {', '.join(missing)}); "
                                f"pass --corpus-dir")


def prepare(args: argparse.Namespace) -> None:
    corpus_dir = args.corpus_dir.resolve()
    check_corpus(corpus_dir)
    options = {"corpus_dir": str(corpus_dir), "max_speakers": args.max_speakers, "seed": args.seed,
               "nontarget_ratio": args.nontarget_ratio}
    if not args.force and outputs_up_to_date(args.out_dir, DATA_DIRS, "prepare_sid_speechocean762", options,
                                             extra_files=("ident_train/speakers.txt", "verif_test/trials")):
        logger.info("%s: speaker ID data dirs up to date, nothing to do (--force to rebuild)", args.out_dir)
        return

    parts = {part: measure_utterances(read_part(corpus_dir, part, args.max_speakers)) for part in CORPUS_PARTS}
    train_speakers = {u.speaker for u in parts["train"].values()}
    test_speakers = {u.speaker for u in parts["test"].values()}
    shared = sorted(train_speakers & test_speakers)
    if shared:
        raise KaldiDataError(f"{corpus_dir}:0: speakers in both train/ and test/ ({' '.join(shared[:10])}); "
                             f"verification needs disjoint speaker sets")
    duplicated = sorted(set(parts["train"]) & set(parts["test"]))
    if duplicated:
        raise KaldiDataError(f"{corpus_dir}:0: utterance ids in both train/ and test/: {' '.join(duplicated[:10])}")
    everything: dict[str, Utterance] = {**parts["train"], **parts["test"]}
    speaker_tables = read_speaker_tables(corpus_dir)

    def subset(utt2spk: dict[str, str]) -> dict[str, Utterance]:
        return {utt: everything[utt] for utt in utt2spk}

    def spk2utt(utterances: dict[str, Utterance]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for utt, u in utterances.items():
            result.setdefault(u.speaker, []).append(utt)
        return result

    out = args.out_dir
    ident = split_identification(spk2utt(everything), args.seed)
    for name, part, with_speakers in (("ident_train", ident.train, True), ("ident_dev", ident.dev, False),
                                      ("ident_test", ident.test, False)):
        write_sid_data_dir(out / name, subset(part), with_speakers=with_speakers, speaker_tables=speaker_tables)
        logger.info("%s: %d utterances, %d speakers", out / name, len(part), len(set(part.values())))

    verif_train, verif_dev = split_train_dev(spk2utt(parts["train"]), args.seed)
    write_sid_data_dir(out / "verif_train", subset(verif_train), with_speakers=True, speaker_tables=speaker_tables)
    write_sid_data_dir(out / "verif_dev", subset(verif_dev), speaker_tables=speaker_tables)
    write_sid_data_dir(out / "verif_test", parts["test"], speaker_tables=speaker_tables)
    trials = make_trials({utt: u.speaker for utt, u in parts["test"].items()}, args.nontarget_ratio, args.seed)
    write_trials(out / "verif_test" / "trials", trials)
    num_target = sum(t.target for t in trials)
    logger.info("verification: %d train speakers (%d train / %d dev utterances), %d test speakers, "
                "%d trials (%d target, %d non-target)", len(train_speakers), len(verif_train), len(verif_dev),
                len(test_speakers), len(trials), num_target, len(trials) - num_target)
    write_stamp(out, "prepare_sid_speechocean762", options)


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
