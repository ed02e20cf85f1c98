#!/usr/bin/env python3
"""Stage 0 of recipes/speechocean762/phone: Kaldi data dirs with per-frame phone labels.

Reads the speechocean762 corpus (``train/``, ``test/``, ``WAVE/``, ``alignments/phones.ctm``) and writes

    OUT/train  OUT/dev  OUT/test    wav.scp (absolute paths), utt2spk, spk2utt, text, spk2gender,
                                    utt2num_frames (from the audio header), frame_labels (one phone per frame)
    OUT/lang/phones.txt             SIL = 0 and the 39 ARPAbet phones

``test`` is the corpus ``test/`` part (its speakers never appear in training); ``dev`` holds the utterances
of a few ``train/`` speakers chosen deterministically (sorted by a hash of the speaker ID). Utterances the
aligner failed on (``alignments/failed.txt``) or without alignment are dropped; unreadable or too-short
audio is skipped; both are counted in the log. Re-running with the same options when every output exists
and validates does nothing (``--force`` redoes).

Example:
    python local/prepare_speechocean762_phone.py --corpus-dir ../shared/corpora/speechocean762 --out-dir data
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from speechattn.bin._hydra import one_line_errors
from speechattn.data.alignments import (PHONES, SILENCE, Segment, frame_labels_from_segments, read_ctm,
                                        read_phone_table, write_phone_table)
from speechattn.data.audio import AudioError, audio_info
from speechattn.data.kaldi_dir import (KaldiDataError, read_table, utt2spk_to_spk2utt, validate_data_dir,
                                       write_table)
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger("prepare_speechocean762_phone")

SAMPLE_RATE = 16000
FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES = 400, 160  # 25 ms / 10 ms at 16 kHz (docs/architecture.md)
SETS = ("train", "dev", "test")
SET_FILES = ("wav.scp", "utt2spk", "spk2utt", "text", "spk2gender", "utt2num_frames", "frame_labels")
STAMP_NAME = ".prepare_speechocean762_phone.json"
STAMP_VERSION = 1
AUDIO_SUFFIXES = (".flac", ".WAV", ".wav")


@dataclass
class SetStats:
    """What happened to one output set, for the log."""

    utterances: int = 0
    speakers: int = 0
    frames: int = 0
    silence_frames: int = 0
    filled_frames: int = 0  # frames whose centre no CTM segment covered (labelled SIL)
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=Path("../shared/corpora/speechocean762"),
                        help="speechocean762 root (with train/, test/, WAVE/, alignments/)")
    parser.add_argument("--out-dir", type=Path, default=Path("data"),
                        help="the recipe's data/ directory; train/, dev/, test/, lang/ are written inside")
    parser.add_argument("--dev-speakers", type=int, default=None,
                        help="number of corpus train/ speakers moved to dev (None: 10%% of them, at least 1)")
    parser.add_argument("--max-utts-per-set", type=int, default=None,
                        help="keep at most this many utterances per output set, for quick tests (None: all)")
    parser.add_argument("--nj", type=int, default=1,
                        help="processes for reading audio headers (1 = in this process; it is fast anyway)")
    parser.add_argument("--force", action="store_true", help="redo even if the outputs are complete")
    return parser.parse_args(argv)


def resolve_audio_path(corpus_dir: Path, value: str) -> Path | None:
    """Absolute path of a corpus wav.scp value; tries .flac / .WAV / .wav (the original corpus has .WAV)."""
    path = Path(value)
    path = path if path.is_absolute() else corpus_dir / path
    for candidate in (path, *(path.with_suffix(suffix) for suffix in AUDIO_SUFFIXES)):
        if candidate.is_file():
            return candidate
    return None


def choose_dev_speakers(speakers: list[str], num_dev: int | None) -> set[str]:
    """Deterministic choice: the first ``num_dev`` speakers ordered by SHA-1 of the ID (default 10%)."""
    if num_dev is None:
        num_dev = max(1, len(speakers) // 10)
    if not 1 <= num_dev < len(speakers):
        raise ValueError(f"--dev-speakers must be in [1, {len(speakers) - 1}] (train/ has {len(speakers)} "
                         f"speakers), got {num_dev}")
    ranked = sorted(speakers, key=lambda spk: hashlib.sha1(spk.encode()).hexdigest())
    return set(ranked[:num_dev])


def num_frames_of(num_samples: int) -> int:
    return 0 if num_samples < FRAME_LENGTH_SAMPLES else 1 + (num_samples - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES


def probe_audio(paths: dict[str, Path], nj: int) -> dict[str, int | str]:
    """``{utt: num_samples at 16 kHz}`` from the headers, or ``{utt: error message}``."""
    def outcome(future_or_call):
        try:
            return future_or_call()[0]
        except AudioError as e:
            return str(e)

    if nj <= 1:
        return {utt: outcome(lambda p=path: audio_info(str(p), SAMPLE_RATE)) for utt, path in paths.items()}
    with ProcessPoolExecutor(max_workers=nj) as pool:
        futures = {utt: pool.submit(audio_info, str(path), SAMPLE_RATE) for utt, path in paths.items()}
        return {utt: outcome(future.result) for utt, future in futures.items()}


def read_corpus_part(corpus_dir: Path, part: str) -> dict[str, dict[str, str]]:
    part_dir = corpus_dir / part
    tables = {name: read_table(part_dir / name) for name in ("wav.scp", "utt2spk", "spk2gender")}
    tables["text"] = read_table(part_dir / "text", min_fields=1)
    return tables


def prepare_set(name: str, utterances: list[str], corpus: dict[str, dict[str, str]], corpus_dir: Path,
                ctm: dict[str, list[Segment]], failed: set[str], args: argparse.Namespace) -> SetStats:
    """Select usable utterances, compute frame labels and write ``args.out_dir / name``."""
    stats = SetStats()
    aligned = []
    for utt in utterances:
        if utt in failed:
            stats.drop("alignment failed")
        elif utt not in ctm:
            stats.drop("no alignment")
        else:
            aligned.append(utt)
    if args.max_utts_per_set is not None and len(aligned) > args.max_utts_per_set:
        stats.dropped["over --max-utts-per-set"] = len(aligned) - args.max_utts_per_set
        aligned = aligned[:args.max_utts_per_set]

    paths: dict[str, Path] = {}
    for utt in aligned:
        path = resolve_audio_path(corpus_dir, corpus["wav.scp"][utt])
        if path is None:
            logger.warning("%s: audio of %s not found: %s", name, utt, corpus["wav.scp"][utt])
            stats.drop("audio missing")
        elif any(c.isspace() for c in str(path)):
            raise KaldiDataError(f"{path}:0: audio path contains whitespace; Kaldi tables cannot hold it")
        else:
            paths[utt] = path
    num_samples = probe_audio(paths, args.nj)

    wav_scp, utt2spk, text, utt2num_frames, frame_labels = {}, {}, {}, {}, {}
    overhanging = 0
    for utt, path in paths.items():
        samples = num_samples[utt]
        if isinstance(samples, str):
            logger.warning("%s: skipping %s: %s", name, utt, samples)
            stats.drop("unreadable audio")
            continue
        num_frames = num_frames_of(samples)
        if num_frames == 0:
            logger.warning("%s: skipping %s: %d samples, shorter than one 25 ms frame", name, utt, samples)
            stats.drop("too short")
            continue
        labels = frame_labels_from_segments(ctm[utt], num_frames)
        # The aligner pads the last phone to a 10 ms boundary: more than one frame past the audio end
        # would mean the alignment belongs to other audio.
        if ctm[utt][-1].end * SAMPLE_RATE > samples + 2 * FRAME_SHIFT_SAMPLES:
            overhanging += 1
        wav_scp[utt], utt2spk[utt] = str(path), corpus["utt2spk"][utt]
        utt2num_frames[utt], frame_labels[utt] = str(num_frames), labels
        if utt in corpus["text"]:
            text[utt] = corpus["text"][utt]
        stats.frames += num_frames
        stats.silence_frames += sum(label == SILENCE for label in labels)
        stats.filled_frames += labels.num_filled
    if overhanging:
        logger.warning("%s: %d utterances have alignments ending more than 2 frames after the audio", name,
                       overhanging)
    if not wav_scp:
        raise KaldiDataError(f"{corpus_dir}:0: no usable utterance left for set '{name}'")
    if len(text) < len(wav_scp):  # the labels come from the alignments; the transcript is only kept
        logger.warning("%s: %d of %d utterances have no transcript in the corpus's text and are left out of "
                       "%s/text, e.g. '%s'", name, len(wav_scp) - len(text), len(wav_scp), name,
                       next(u for u in wav_scp if u not in text))

    spk2utt = utt2spk_to_spk2utt(utt2spk)
    spk2gender = {spk: corpus["spk2gender"][spk] for spk in spk2utt if spk in corpus["spk2gender"]}
    set_dir = args.out_dir / name
    for stale in ("feats.scp", "cmvn_spk.scp", "cmvn_global.ark"):
        if (set_dir / stale).exists():
            logger.warning("%s: %s is from an earlier run and may not match the new data", set_dir, stale)
    for file_name, table in (("wav.scp", wav_scp), ("utt2spk", utt2spk), ("spk2utt", spk2utt), ("text", text),
                             ("spk2gender", spk2gender), ("utt2num_frames", utt2num_frames),
                             ("frame_labels", frame_labels)):
        write_table(set_dir / file_name, table)
    stats.utterances, stats.speakers = len(wav_scp), len(spk2utt)
    return stats


def outputs_complete(out_dir: Path, stamp: dict) -> bool:
    """True when a previous run with the same options finished and its outputs validate."""
    stamp_path = out_dir / STAMP_NAME
    if not stamp_path.is_file():
        return False
    try:
        if json.loads(stamp_path.read_text()) != stamp:
            return False
        if read_phone_table(out_dir / "lang" / "phones.txt") != list(PHONES):
            return False
        for name in SETS:
            if not all((out_dir / name / f).is_file() for f in SET_FILES):
                return False
            validate_data_dir(out_dir / name, require_labels="frame_labels")
    except (OSError, ValueError) as e:  # KaldiDataError and json errors are ValueErrors
        logger.info("previous outputs in %s are incomplete or stale (%s); preparing again", out_dir, e)
        return False
    return True


def log_stats(name: str, stats: SetStats) -> None:
    silence = 100.0 * stats.silence_frames / max(1, stats.frames)
    dropped = ", ".join(f"{reason}: {count}" for reason, count in sorted(stats.dropped.items())) or "none"
    logger.info("%-5s %5d utterances, %4d speakers, %8d frames (%.1f h), %.1f%% SIL frames, %d frames not "
                "covered by the alignment; dropped: %s", name, stats.utterances, stats.speakers, stats.frames,
                stats.frames / 360000, silence, stats.filled_frames, dropped)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    corpus_dir = args.corpus_dir.resolve()
    required = [corpus_dir / p for p in ("train/wav.scp", "test/wav.scp", "alignments/phones.ctm")]
    if not corpus_dir.is_dir() or not all(p.is_file() for p in required):
        missing = corpus_dir if not corpus_dir.is_dir() else next(p for p in required if not p.is_file())
        logger.error("speechocean762 corpus not found: %s does not exist (pass --corpus-dir)", missing)
        return 1
    if args.nj < 1 or (args.max_utts_per_set is not None and args.max_utts_per_set < 1):
        logger.error("--nj and --max-utts-per-set must be >= 1")
        return 1
    stamp = {"version": STAMP_VERSION, "corpus_dir": str(corpus_dir), "dev_speakers": args.dev_speakers,
             "max_utts_per_set": args.max_utts_per_set}
    if not args.force and outputs_complete(args.out_dir, stamp):
        print(f"{args.out_dir}: speechocean762 phone data already prepared and valid; nothing to do "
              f"(use --force to redo)")
        return 0

    try:
        train, test = read_corpus_part(corpus_dir, "train"), read_corpus_part(corpus_dir, "test")
        ctm = read_ctm(corpus_dir / "alignments" / "phones.ctm", phones=PHONES)
        failed_path = corpus_dir / "alignments" / "failed.txt"
        failed = set(read_table(failed_path, check_sorted=False, min_fields=1)) if failed_path.is_file() else set()
        train_speakers = list(utt2spk_to_spk2utt(train["utt2spk"]))
        dev_speakers = choose_dev_speakers(train_speakers, args.dev_speakers)
        split = {
            "train": [u for u in train["wav.scp"] if train["utt2spk"].get(u) not in dev_speakers],
            "dev": [u for u in train["wav.scp"] if train["utt2spk"].get(u) in dev_speakers],
            "test": list(test["wav.scp"]),
        }
        for name in SETS:
            corpus = test if name == "test" else train
            missing_spk = next((u for u in split[name] if u not in corpus["utt2spk"]), None)
            if missing_spk is not None:
                part = "test" if name == "test" else "train"
                raise KaldiDataError(f"{corpus_dir / part / 'utt2spk'}:0: utterance '{missing_spk}' of wav.scp "
                                     f"has no speaker")
            stats = prepare_set(name, split[name], corpus, corpus_dir, ctm, failed, args)
            log_stats(name, stats)
        write_phone_table(args.out_dir / "lang" / "phones.txt")
        for name in SETS:
            validate_data_dir(args.out_dir / name, require_labels="frame_labels")
    except (KaldiDataError, ValueError) as e:
        logger.error("%s", e)
        return 1
    atomic_write_text(args.out_dir / STAMP_NAME, json.dumps(stamp, indent=1) + "\n")
    logger.info("wrote %s (train/dev/test, lang/phones.txt)", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main)())
