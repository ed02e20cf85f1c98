#!/usr/bin/env python3
"""Stage 0 of recipes/librispeech/phone: Kaldi data dirs with per-frame phone labels from LibriSpeech
aligned by the Montreal Forced Aligner.

Reads LibriSpeech in its own layout (openslr resource 12; ``--corpus-dir`` is the ``LibriSpeech/``
directory)::

    <subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    <subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt         "<spk>-<chapter>-<utt> TRANSCRIPT"
    SPEAKERS.TXT                                              (optional: speaker sex -> spk2gender)

and MFA's TextGrids (``--alignments-dir``), ``ADIR/<subset>/<spk>/<chapter>/<utt-id>.TextGrid`` with a
``phones`` tier (``--phone-tier``) of ARPAbet phones with stress digits, silence as empty intervals
(``speechattn/data/textgrid.py`` reads them with praatio). It writes

    OUT/train  OUT/dev  OUT/test     wav.scp, utt2spk, spk2utt, text, spk2gender, utt2num_frames,
                                     frame_labels (one of 39 ARPAbet phones, stress removed, or SIL per frame)
    OUT/lang/phones.txt              SIL = 0 and the 39 phones (the speechocean762 recipe's inventory)

``train`` = ``--train-sets`` (default train-clean-100), ``dev`` = ``--dev-sets`` (dev-clean), ``test`` =
``--test-sets`` (test-clean); several subsets per set are merged (e.g. ``--train-sets "train-clean-100
train-clean-360"``). Frame *i* takes the phone under its centre (``10 i + 12.5`` ms).

Bad input. An utterance whose audio or TextGrid is missing (MFA leaves out what it cannot align), whose
TextGrid has no phone tier or a phone outside ARPAbet, whose alignment ends more than ``--max-overhang``
seconds after the audio, or which contains ``spn`` (MFA's spoken noise for out-of-vocabulary words: no
phone identity to learn) is skipped: logged with the file (and line), counted per set, and listed in
``OUT/<set>/skipped.txt``. ``--strict`` stops at the first one instead. A malformed ``trans.txt`` line is an
error naming file and line.

Example:
    python local/prepare_librispeech_mfa.py --corpus-dir /data/LibriSpeech --alignments-dir /data/mfa/LibriSpeech
"""
from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from speechattn.data.alignments import PHONES, SILENCE, frame_labels_from_segments, write_phone_table
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.phone_data_dir import PreparedUtterance, write_phone_data_dir
from speechattn.data.sid_splits import outputs_up_to_date, write_stamp
from speechattn.data.textgrid import SPOKEN_NOISE, MissingTierError, TextGridError, read_phone_tier
from speechattn.data.framing import num_frames

logger = logging.getLogger("prepare_librispeech_mfa")

SETS = ("train", "dev", "test")
SAMPLE_RATE = 16000
STAMP_NAME = "prepare_librispeech_mfa"
STAMP_VERSION = 1


@dataclass(frozen=True)
class LibriUtterance:
    utt_id: str
    speaker: str
    text: str
    audio: Path
    textgrid: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, required=True, help="the LibriSpeech/ directory (subsets inside)")
    parser.add_argument("--alignments-dir", type=Path, required=True,
                        help="MFA output: <subset>/<spk>/<chapter>/<utt-id>.TextGrid")
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="where train/, dev/, test/, lang/ go")
    parser.add_argument("--train-sets", default="train-clean-100", help="subsets forming train (space-separated)")
    parser.add_argument("--dev-sets", default="dev-clean", help="subsets forming dev")
    parser.add_argument("--test-sets", default="test-clean", help="subsets forming test")
    parser.add_argument("--phone-tier", default="phones", help="name of the TextGrids' phone tier")
    parser.add_argument("--max-overhang", type=float, default=0.010,
                        help="seconds an alignment may extend past the audio before the utterance is skipped")
    parser.add_argument("--max-utts-per-set", type=int, default=None,
                        help="keep at most this many utterances per set, for quick tests (None: all)")
    parser.add_argument("--nj", type=int, default=1, help="processes reading audio headers and TextGrids")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad utterance instead of skipping it")
    parser.add_argument("--force", action="store_true", help="redo even if the outputs are complete")
    return parser.parse_args(argv)


def read_transcripts(path: Path) -> dict[str, str]:
    """``<spk>-<chapter>.trans.txt`` -> ``{utt_id: TRANSCRIPT}``; errors name file and line."""
    prefix = path.name[: -len(".trans.txt")]
    transcripts: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if not fields:
                continue
            utt_id = fields[0]
            if not utt_id.startswith(prefix + "-") or utt_id in transcripts:
                raise KaldiDataError(f"{path}:{lineno}: expected a new utterance ID '{prefix}-NNNN', got '{utt_id}'")
            transcripts[utt_id] = fields[1].strip() if len(fields) > 1 else ""
    return transcripts


def scan_subset(corpus_dir: Path, alignments_dir: Path, subset: str) -> list[LibriUtterance]:
    """Utterances of one subset, from its ``trans.txt`` files, in ID order."""
    subset_dir = corpus_dir / subset
    if not subset_dir.is_dir():
        raise KaldiDataError(f"{subset_dir}:0: LibriSpeech subset not found (is --corpus-dir the LibriSpeech/ "
                             f"directory?)")
    utterances = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        if trans.name != f"{speaker}-{chapter}.trans.txt":
            raise KaldiDataError(f"{trans}:0: expected {speaker}-{chapter}.trans.txt in {trans.parent}")
        for utt_id, text in read_transcripts(trans).items():
            utterances.append(LibriUtterance(utt_id, speaker, text, trans.parent / f"{utt_id}.flac",
                                             alignments_dir / subset / speaker / chapter / f"{utt_id}.TextGrid"))
    if not utterances:
        raise KaldiDataError(f"{subset_dir}:0: no <spk>/<chapter>/<spk>-<chapter>.trans.txt found")
    return sorted(utterances, key=lambda u: u.utt_id)


def read_speaker_genders(corpus_dir: Path) -> dict[str, str]:
    """``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``) -> ``{speaker: "m"/"f"}``; {} if absent."""
    path = corpus_dir / "SPEAKERS.TXT"
    genders: dict[str, str] = {}
    if not path.is_file():
        return genders
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.startswith(";") or not line.strip():
                continue
            fields = [field.strip() for field in line.split("|")]
            if len(fields) < 3 or fields[1].upper() not in ("M", "F"):
                raise KaldiDataError(f"{path}:{lineno}: expected 'ID | SEX | SUBSET | ...', got {line.strip()!r}")
            genders[fields[0]] = fields[1].lower()
    return genders


def prepare_utterance(utterance: LibriUtterance, tier: str = "phones",
                      max_overhang: float = 0.010) -> PreparedUtterance:
    """Audio header + TextGrid phone tier -> frame labels (runs in worker processes)."""
    result = PreparedUtterance(utterance.utt_id, utterance.speaker, wav=str(utterance.audio.resolve()),
                               text=utterance.text)

    def skip(reason: str, message: str) -> PreparedUtterance:
        result.skip_reason, result.skip_message = reason, message
        return result

    if not utterance.audio.is_file():
        return skip("audio missing", f"{utterance.audio}:0: audio file listed in trans.txt not found")
    try:
        info = sf.info(str(utterance.audio))
    except (sf.LibsndfileError, RuntimeError) as e:
        return skip("unreadable audio", f"{utterance.audio}:0: {e}")
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        return skip("not 16 kHz mono", f"{utterance.audio}:0: {info.samplerate} Hz, {info.channels} channel(s)")
    result.num_frames = num_frames(info.frames, SAMPLE_RATE)
    if result.num_frames == 0:
        return skip("too short", f"{utterance.audio}:0: shorter than one 25 ms frame")
    if not utterance.textgrid.is_file():
        return skip("no alignment", f"{utterance.textgrid}:0: no TextGrid (MFA did not align this utterance)")
    try:
        segments = read_phone_tier(utterance.textgrid, tier)
    except MissingTierError as e:
        return skip(f"no '{tier}' tier", str(e))
    except TextGridError as e:
        return skip("bad TextGrid", str(e))
    duration = info.frames / SAMPLE_RATE
    if segments and segments[-1].end > duration + max_overhang:
        return skip("alignment ends after the audio",
                    f"{utterance.textgrid}:0: the '{tier}' tier ends at {segments[-1].end:.3f} s, after the audio "
                    f"({duration:.3f} s)")
    noise = next((s for s in segments if s.label == SPOKEN_NOISE), None)
    if noise is not None:
        return skip("spoken noise (spn)", f"{utterance.textgrid}:0: 'spn' at {noise.start:.3f} s (an out-of-"
                                          f"vocabulary word): no phone labels for it")
    labels = frame_labels_from_segments(segments, result.num_frames, fill=SILENCE)
    result.labels, result.filled_frames = list(labels), labels.num_filled
    return result


def _prepare_many(utterances: list[LibriUtterance], tier: str, max_overhang: float,
                  nj: int) -> list[PreparedUtterance]:
    if nj <= 1:
        return [prepare_utterance(u, tier, max_overhang) for u in utterances]
    with ProcessPoolExecutor(max_workers=nj) as pool:
        return list(pool.map(prepare_utterance, utterances, [tier] * len(utterances),
                             [max_overhang] * len(utterances), chunksize=32))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nj < 1 or (args.max_utts_per_set is not None and args.max_utts_per_set < 1):
        logger.error("--nj and --max-utts-per-set must be >= 1")
        return 1
    subsets = {"train": args.train_sets.split(), "dev": args.dev_sets.split(), "test": args.test_sets.split()}
    corpus_dir, alignments_dir = args.corpus_dir.resolve(), args.alignments_dir.resolve()
    options = {"version": STAMP_VERSION, "corpus_dir": str(corpus_dir), "alignments_dir": str(alignments_dir),
               "subsets": subsets, "phone_tier": args.phone_tier, "max_overhang": args.max_overhang,
               "max_utts_per_set": args.max_utts_per_set}
    if not args.force and outputs_up_to_date(args.out_dir, SETS, STAMP_NAME, options,
                                             extra_files=("lang/phones.txt", *(f"{s}/frame_labels" for s in SETS))):
        logger.info("%s: LibriSpeech data dirs up to date, nothing to do (--force to redo)", args.out_dir)
        return 0
    try:
        genders = read_speaker_genders(corpus_dir)
        speakers_of: dict[str, set[str]] = {}
        for name in SETS:
            if not subsets[name]:
                raise ValueError(f"--{name}-sets is empty")
            utterances = [u for subset in subsets[name] for u in scan_subset(corpus_dir, alignments_dir, subset)]
            excluded = {}
            if args.max_utts_per_set is not None and len(utterances) > args.max_utts_per_set:
                excluded["over --max-utts-per-set"] = len(utterances) - args.max_utts_per_set
                utterances = utterances[:args.max_utts_per_set]
            speakers_of[name] = {u.speaker for u in utterances}
            results = _prepare_many(utterances, args.phone_tier, args.max_overhang, args.nj)
            stats = write_phone_data_dir(args.out_dir / name, results, strict=args.strict, spk2gender=genders,
                                         skipped=excluded)
            logger.info("%s (%s)", stats.summary(name), " ".join(subsets[name]))
        shared = speakers_of["train"] & (speakers_of["dev"] | speakers_of["test"])
        if shared:
            logger.warning("%d speaker(s) are in train and in dev/test (e.g. %s): the subsets chosen are not "
                           "speaker-disjoint", len(shared), " ".join(sorted(shared)[:5]))
        write_phone_table(args.out_dir / "lang" / "phones.txt", PHONES)
    except (KaldiDataError, ValueError) as e:
        logger.error("%s", e)
        return 1
    write_stamp(args.out_dir, STAMP_NAME, options)
    logger.info("wrote %s (train/dev/test, lang/phones.txt)", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
