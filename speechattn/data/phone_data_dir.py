"""Write a phone-classification data dir from per-utterance preparation results, skips counted and listed.

Shared by the corpus preparations (``local/prepare_timit.py``, ``local/prepare_librispeech_mfa.py``): each
turns one utterance into a :class:`PreparedUtterance` (its table values, or why it cannot be used), and
:func:`write_phone_data_dir` writes the Kaldi tables (``wav.scp``, ``utt2spk``, ``spk2utt``, ``text``,
``utt2num_frames``, ``frame_labels``, optionally ``spk2gender``) into a fresh directory, lists the skipped utterances with their
reasons in ``skipped.txt`` (nothing is dropped silently) and validates the directory.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "train"
    >>> wav = d.parent / "u1.wav"; wav.touch()
    >>> ok = PreparedUtterance("s1_u1", "s1", str(wav), num_frames=3, labels=["SIL", "AA", "SIL"])
    >>> bad = PreparedUtterance("s1_u2", "s1", skip_reason="missing .PHN", skip_message="/a/u2.PHN:0: missing")
    >>> stats = write_phone_data_dir(d, [ok, bad])
    >>> stats.utterances, dict(stats.skipped), (d / "skipped.txt").read_text()
    (1, {'missing .PHN': 1}, 's1_u2 missing .PHN: /a/u2.PHN:0: missing\\n')
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from speechattn.data.kaldi_dir import KaldiDataError, read_fields, utt2spk_to_spk2utt, validate_data_dir, write_table
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SKIPPED_LIST = "skipped.txt"
# Optional ``<lang_dir>/score_map`` (``TRAINING_PHONE SCORING_CLASS`` per line): a preparation whose scoring
# classes differ from its training classes (TIMIT: 48 -> 39) writes it; training copies it into the
# experiment and the phone scorer folds reference and hypothesis through it (no corpus names in the code).
SCORE_MAP = "score_map"


@dataclass
class PreparedUtterance:
    """One utterance's table values, or (``skip_reason`` set) why it was left out."""

    utt_id: str
    speaker: str
    wav: str = ""
    num_frames: int = 0
    labels: list[str] = field(default_factory=list)
    text: str = ""
    filled_frames: int = 0       # frames no alignment segment covered (labelled silence)
    skip_reason: str = ""        # short category, counted in the log
    skip_message: str = ""       # the full message, "file:line: what is wrong"


@dataclass
class SetStats:
    """Counts of one written set, for the log."""

    utterances: int = 0
    speakers: int = 0
    frames: int = 0
    silence_frames: int = 0
    filled_frames: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self, name: str, silence: str = "SIL") -> str:
        share = 100.0 * self.silence_frames / max(1, self.frames)
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()) if n) or "none"
        return (f"{name:<5} {self.utterances:6d} utterances, {self.speakers:4d} speakers, {self.frames:9d} frames "
                f"({self.frames / 360000:.2f} h), {share:.1f}% {silence} frames, {self.filled_frames} frames outside "
                f"every segment; skipped: {skipped}")


def write_phone_data_dir(set_dir: str | Path, results: Iterable[PreparedUtterance], *, strict: bool = False,
                         spk2gender: Mapping[str, str] | None = None, silence: str = "SIL",
                         skipped: Mapping[str, int] | None = None) -> SetStats:
    """Write ``set_dir`` from ``results``; returns its counts.

    A skipped result is logged (its message names the file and line) and listed in ``skipped.txt``; with
    ``strict`` the first one raises :class:`KaldiDataError` instead. ``skipped`` adds counts of utterances
    the caller left out before preparing them (e.g. SA sentences). Raises when nothing is left.
    """
    set_dir = Path(set_dir)
    stats = SetStats(skipped=Counter(skipped or {}))
    tables: dict[str, dict] = {name: {} for name in ("wav.scp", "utt2spk", "text", "utt2num_frames", "frame_labels")}
    skipped_lines: list[str] = []
    for result in results:
        if result.skip_reason:
            if strict:
                raise KaldiDataError(result.skip_message)
            logger.warning("%s: skipping %s: %s", set_dir.name, result.utt_id, result.skip_message)
            stats.skipped[result.skip_reason] += 1
            skipped_lines.append(f"{result.utt_id} {result.skip_reason}: {result.skip_message}\n")
            continue
        if len(result.labels) != result.num_frames:
            raise KaldiDataError(f"{result.wav}:0: {len(result.labels)} frame labels for {result.num_frames} frames")
        if any(c.isspace() for c in result.wav):
            raise KaldiDataError(f"{result.wav}:0: audio path contains whitespace; Kaldi tables cannot hold it")
        if result.utt_id in tables["wav.scp"]:
            raise KaldiDataError(f"{result.wav}:0: utterance ID '{result.utt_id}' occurs twice")
        tables["wav.scp"][result.utt_id] = result.wav
        tables["utt2spk"][result.utt_id] = result.speaker
        tables["text"][result.utt_id] = result.text
        tables["utt2num_frames"][result.utt_id] = str(result.num_frames)
        tables["frame_labels"][result.utt_id] = result.labels
        stats.frames += result.num_frames
        stats.silence_frames += sum(label == silence for label in result.labels)
        stats.filled_frames += result.filled_frames
    if not tables["wav.scp"]:
        raise KaldiDataError(f"{set_dir}:0: no usable utterance left for this set (skipped: {dict(stats.skipped)})")
    spk2utt = utt2spk_to_spk2utt(dict(sorted(tables["utt2spk"].items())))
    # Built beside set_dir and moved over it once valid: files derived from an earlier version of the set
    # (feats.scp, CMVN statistics) go with the old directory instead of silently mismatching the new one.
    set_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{set_dir.name}.", suffix=".tmp", dir=set_dir.parent))
    try:
        tmp.chmod(0o755)
        for name, table in tables.items():
            write_table(tmp / name, table)
        write_table(tmp / "spk2utt", spk2utt)
        if spk2gender is not None:
            write_table(tmp / "spk2gender", {spk: spk2gender[spk] for spk in spk2utt if spk in spk2gender})
        atomic_write_text(tmp / SKIPPED_LIST, "".join(skipped_lines))
        validate_data_dir(tmp, require_labels="frame_labels")
        if set_dir.exists():
            shutil.rmtree(set_dir)
        os.replace(tmp, set_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats.utterances, stats.speakers = len(tables["wav.scp"]), len(spk2utt)
    return stats


def read_score_map(path: str | Path, phones: list[str]) -> tuple[dict[str, str], list[str]]:
    """A ``score_map`` (``PHONE CLASS`` per line) for the training classes ``phones``: ``(map, classes)``,
    the scoring classes in the order of their first training phone (so ``SIL`` stays first).

    Every training phone must be mapped, and only those: errors name the file and line.
    """
    path = Path(path)
    mapping: dict[str, str] = {}
    known = set(phones)
    for lineno, (phone, scoring_class) in read_fields(path, 2, "'PHONE CLASS'", what="score map"):
        if phone not in known:
            raise KaldiDataError(f"{path}:{lineno}: '{phone}' is not a training phone (phones.txt)")
        if phone in mapping:
            raise KaldiDataError(f"{path}:{lineno}: '{phone}' is mapped twice")
        mapping[phone] = scoring_class
    missing = [p for p in phones if p not in mapping]
    if missing:
        raise KaldiDataError(f"{path}:0: {len(missing)} training phone(s) not mapped (first: {missing[0]})")
    return mapping, list(dict.fromkeys(mapping[p] for p in phones))
