"""Deterministic speaker-ID data splits and verification trial lists.

Everything here depends only on the *set* of (speaker, utterance) pairs and a seed: never on file order,
dict order, Python's per-process ``hash()`` randomisation or the Python version. The rule:

* **Order inside a speaker.** A speaker's utterances are ranked by ``sha256(f"{seed}/{speaker}/{utt}")``
  (ties, impossible in practice, broken by the utterance id). This is a seeded shuffle of the sorted list
  that does not move when utterances are added to or removed from *other* speakers.
* **Identification** (closed set; every speaker in train, dev and test): for a speaker with n utterances,
  ``k = max(1, round_half_up(n / 10))``; the first k ranked utterances go to dev, the next k to test, the
  rest to train (10 -> 8/1/1, 25 -> 19/3/3, 3 -> 1/1/1). n = 2 -> train + test (no dev); n = 1 -> train only
  (logged: a single utterance cannot be both trained on and tested).
* **Verification model selection** (train speakers only): ``k`` as above to dev, the rest to train; n = 1
  -> train only.
* **Verification trials** (held-out speakers only): every same-speaker pair is a target trial; non-target
  trials are the ``nontarget_ratio`` x (number of targets) different-speaker pairs with the smallest
  ``sha256(f"{seed}/{utt1}/{utt2}")`` (utt1 < utt2), i.e. a seeded uniform sample without replacement of
  all different-speaker pairs (all of them if there are fewer). Trials are written VoxCeleb-style,
  ``LABEL UTT1 UTT2`` with LABEL 1 = target, 0 = non-target, UTT1 < UTT2, lines sorted by (UTT1, UTT2).
  For speechocean762 test/ (125 speakers x 10 utterances): 125 x C(10, 2) = 5,625 target and, with the
  default ratio 5, 28,125 non-target trials out of 775,000 possible.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from speechattn.data.audio import audio_info
from speechattn.data.kaldi_dir import (KaldiDataError, utt2spk_to_spk2utt, validate_data_dir,
                                       write_table)
from speechattn.data.framing import num_frames
from speechattn.data.speakers import write_speakers
from speechattn.data.trials import Trial
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "IdentificationSplit",
    "held_out_count",
    "rank_utterances",
    "split_identification",
    "split_train_dev",
    "Trial",
    "make_trials",
    "Utterance",
    "measure_utterances",
    "write_sid_data_dir",
    "outputs_up_to_date",
    "write_stamp",
]

DEFAULT_SEED = 762
HELD_OUT_FRACTION = 0.1


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def held_out_count(num_utterances: int, fraction: float = HELD_OUT_FRACTION) -> int:
    """Utterances a speaker gives to each held-out part: ``max(1, round_half_up(n * fraction))``.

    Round half up (not Python's banker's rounding) so 15 -> 2 and 25 -> 3, as one would compute by hand.
    """
    return max(1, math.floor(num_utterances * fraction + 0.5))


def rank_utterances(speaker: str, utterances: Iterable[str], seed: int = DEFAULT_SEED) -> list[str]:
    """The speaker's utterances in seeded-hash order (independent of the input order)."""
    return sorted(set(utterances), key=lambda utt: (_digest(f"{seed}/{speaker}/{utt}"), utt))


@dataclass
class IdentificationSplit:
    """utt -> speaker maps for each part, plus the speakers that could not be fully split."""

    train: dict[str, str] = field(default_factory=dict)
    dev: dict[str, str] = field(default_factory=dict)
    test: dict[str, str] = field(default_factory=dict)
    train_only_speakers: list[str] = field(default_factory=list)  # n = 1: nothing to hold out
    no_dev_speakers: list[str] = field(default_factory=list)  # n = 2: train + test only


def split_identification(spk2utt: Mapping[str, Iterable[str]], seed: int = DEFAULT_SEED) -> IdentificationSplit:
    """Closed-set split of every speaker's utterances into train/dev/test (rule in the module docstring).

    Example:
        >>> split = split_identification({"a": [f"a{i}" for i in range(10)], "b": ["b0"]})
        >>> len(split.train), len(split.dev), len(split.test), split.train_only_speakers
        (9, 1, 1, ['b'])
    """
    split = IdentificationSplit()
    for speaker in sorted(spk2utt):
        ranked = rank_utterances(speaker, spk2utt[speaker], seed)
        n = len(ranked)
        if n == 0:
            continue
        if n == 1:
            split.train_only_speakers.append(speaker)
            dev, test, train = [], [], ranked
        elif n == 2:
            split.no_dev_speakers.append(speaker)
            dev, test, train = [], ranked[:1], ranked[1:]
        else:
            k = held_out_count(n)
            dev, test, train = ranked[:k], ranked[k : 2 * k], ranked[2 * k :]
        for part, utts in ((split.train, train), (split.dev, dev), (split.test, test)):
            part.update((utt, speaker) for utt in utts)
    if split.train_only_speakers:
        logger.warning("%d speaker(s) with a single utterance kept in train only (not testable): %s",
                       len(split.train_only_speakers), " ".join(split.train_only_speakers))
    if split.no_dev_speakers:
        logger.warning("%d speaker(s) with two utterances split train + test, no dev: %s",
                       len(split.no_dev_speakers), " ".join(split.no_dev_speakers))
    return split


def split_train_dev(
    spk2utt: Mapping[str, Iterable[str]], seed: int = DEFAULT_SEED
) -> tuple[dict[str, str], dict[str, str]]:
    """Train/dev (utt -> speaker) split of each speaker's utterances for model selection.

    Dev gets ``held_out_count(n)`` utterances per speaker with n >= 2; single-utterance speakers stay in train.
    """
    train: dict[str, str] = {}
    dev: dict[str, str] = {}
    single = []
    for speaker in sorted(spk2utt):
        ranked = rank_utterances(speaker, spk2utt[speaker], seed)
        if len(ranked) == 1:
            single.append(speaker)
        k = held_out_count(len(ranked)) if len(ranked) >= 2 else 0
        dev.update((utt, speaker) for utt in ranked[:k])
        train.update((utt, speaker) for utt in ranked[k:])
    if single:
        logger.warning("%d speaker(s) with a single utterance kept in train only: %s", len(single), " ".join(single))
    return train, dev


def make_trials(utt2spk: Mapping[str, str], nontarget_ratio: float = 5.0, seed: int = DEFAULT_SEED) -> list[Trial]:
    """All target pairs and a seeded sample of ``nontarget_ratio`` x as many non-target pairs, sorted.

    The non-target sample enumerates all different-speaker pairs (quadratic in the number of utterances:
    fine for thousands, ~1 s for speechocean762's 1,250 test utterances) and keeps those with the smallest
    seeded hash, so it does not depend on input order.

    Example:
        >>> trials = make_trials({"a1": "a", "a2": "a", "b1": "b", "b2": "b"}, nontarget_ratio=1.0)
        >>> [(t.utt1, t.utt2, t.target) for t in trials if t.target]
        [('a1', 'a2', True), ('b1', 'b2', True)]
        >>> sum(not t.target for t in trials)
        2
    """
    if nontarget_ratio < 0:
        raise ValueError(f"nontarget_ratio must be >= 0, got {nontarget_ratio}")
    utts = sorted(utt2spk)
    targets = [Trial(1, u1, u2) for u1, u2 in itertools.combinations(utts, 2) if utt2spk[u1] == utt2spk[u2]]
    wanted = round(nontarget_ratio * len(targets))
    nontarget_pairs = ((u1, u2) for u1, u2 in itertools.combinations(utts, 2) if utt2spk[u1] != utt2spk[u2])
    sampled = heapq.nsmallest(wanted, nontarget_pairs, key=lambda pair: _digest(f"{seed}/{pair[0]}/{pair[1]}"))
    if len(sampled) < wanted:
        logger.warning("only %d non-target pairs exist (asked for %d): using all", len(sampled), wanted)
    # (utt1, utt2) order: the pairs are unique, so the label never decides
    return sorted(targets + [Trial(0, u1, u2) for u1, u2 in sampled], key=lambda t: (t.utt1, t.utt2))


# ---------------------------------------------------------------------------------------------------------
# Writing the split data directories (shared by local/prepare_sid_*.py)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One usable utterance: its speaker, absolute audio path and frame count at 16 kHz."""

    speaker: str
    wav: str
    num_frames: int


def measure_utterances(entries: Iterable[tuple[str, str, str, str]]) -> dict[str, Utterance]:
    """``(utt, speaker, wav_path, where)`` -> ``{utt: Utterance}`` with 16 kHz frame counts from the header.

    The frame count is that of the audio *resampled to 16 kHz* (what feature extraction sees), so 8 kHz
    audio gets the same frame count as its 16 kHz version. Utterances shorter than one 25 ms window give no
    frame and are skipped (logged with a count). ``where`` ("file:line") is put in audio errors.
    """
    utterances: dict[str, Utterance] = {}
    too_short = []
    for utt, speaker, wav, where in entries:
        samples_16k, _, _ = audio_info(wav, 16000, where=where)
        frames = num_frames(samples_16k, 16000)
        if frames == 0:
            too_short.append(utt)
            continue
        utterances[utt] = Utterance(speaker, wav, frames)
    if too_short:
        logger.warning("skipped %d utterance(s) shorter than one 25 ms window: %s", len(too_short), " ".join(too_short[:10]))
    return utterances


def write_sid_data_dir(
    path: str | os.PathLike,
    utterances: Mapping[str, Utterance],
    *,
    with_speakers: bool = False,
    speaker_tables: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Write a Kaldi data dir (wav.scp, utt2spk, spk2utt, utt2num_frames [+ speakers.txt]) and validate it.

    The directory is built beside ``path`` under a temporary name, validated, and only then moved over
    ``path`` (an existing directory there is replaced, together with any files derived from it, such as
    feats.scp, which would no longer match). ``speaker_tables`` (e.g. spk2gender) are restricted to the
    speakers present.
    """
    path = Path(path)
    if not utterances:
        raise KaldiDataError(f"{path}:0: no utterances for this data directory (too few per speaker?)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_current_umask())  # mkdtemp makes it private; the final dir should not be
    try:
        utt2spk = {utt: u.speaker for utt, u in utterances.items()}
        write_table(tmp / "wav.scp", {utt: u.wav for utt, u in utterances.items()})
        write_table(tmp / "utt2spk", utt2spk)
        write_table(tmp / "spk2utt", utt2spk_to_spk2utt({utt: utt2spk[utt] for utt in sorted(utt2spk)}))
        write_table(tmp / "utt2num_frames", {utt: str(u.num_frames) for utt, u in utterances.items()})
        speakers = set(utt2spk.values())
        for name, table in (speaker_tables or {}).items():
            write_table(tmp / name, {spk: value for spk, value in table.items() if spk in speakers})
        if with_speakers:
            write_speakers(tmp / "speakers.txt", speakers)
        validate_data_dir(tmp)
        if path.exists():
            logger.info("replacing existing %s", path)
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stamp_path(out_dir: Path, stamp_name: str) -> Path:
    return out_dir / f".{stamp_name}.done.json"


def outputs_up_to_date(
    out_dir: str | os.PathLike, dir_names: Iterable[str], stamp_name: str, options: Mapping[str, object],
    extra_files: Iterable[str] = (),
) -> bool:
    """True when a previous run with the same ``options`` finished and its data dirs still validate."""
    out_dir = Path(out_dir)
    stamp = _stamp_path(out_dir, stamp_name)
    if not stamp.is_file():
        return False
    try:
        previous = json.loads(stamp.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if previous != json.loads(json.dumps(dict(options))):
        logger.info("%s: options changed since the last run (%s -> %s): rebuilding", out_dir, previous, dict(options))
        return False
    for name in extra_files:
        if not (out_dir / name).is_file():
            logger.info("%s missing: rebuilding", out_dir / name)
            return False
    for name in dir_names:
        try:
            validate_data_dir(out_dir / name)
        except KaldiDataError as e:
            logger.warning("existing output does not validate (%s): rebuilding", e)
            return False
    return True


def write_stamp(out_dir: str | os.PathLike, stamp_name: str, options: Mapping[str, object]) -> None:
    """Record that a run with ``options`` completed (written last, so its presence means success)."""
    atomic_write_text(_stamp_path(Path(out_dir), stamp_name), json.dumps(dict(options), indent=2, sort_keys=True) + "\n")
