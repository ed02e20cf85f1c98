"""A verification dev set for model selection: training speakers held back from training, and trials
among their utterances (selection by EER needs speakers the model has not been trained on, like the test
speakers, or the dev EER flatters the model).

Which speakers are held back depends only on the speaker set and the seed: speakers are ranked by
``sha256(f"{seed}/holdout/{speaker}")`` (as :mod:`speechattn.data.sid_splits` ranks utterances) and the
first ``count`` are held back.

Example:
    >>> spk2utt = {f"s{i}": [f"s{i}-u{j}" for j in range(3)] for i in range(10)}
    >>> train, held = hold_out_speakers(spk2utt, count=2)
    >>> len(train), sorted(held)
    (8, ['s4', 's8'])
    >>> trials = dev_trials(held)
    >>> len(trials), sum(label for label, _, _ in trials)   # all pairs of 6 utterances, 6 same-speaker
    (15, 6)
"""
from __future__ import annotations

import hashlib
import itertools
import math
from typing import Iterable, Mapping

from speechattn.data.sid_splits import DEFAULT_SEED, make_trials
from speechattn.data.trials import Trial

__all__ = ["hold_out_speakers", "held_out_speaker_count", "dev_trials", "limit_utterances"]


def held_out_speaker_count(num_speakers: int, fraction: float = 0.1, minimum: int = 2) -> int:
    """``max(minimum, round_half_up(num_speakers * fraction))``, never all speakers."""
    if num_speakers < minimum + 1:
        raise ValueError(f"need more than {minimum} speakers to hold {minimum} back, got {num_speakers}")
    return min(num_speakers - 1, max(minimum, math.floor(num_speakers * fraction + 0.5)))


def hold_out_speakers(spk2utt: Mapping[str, Iterable[str]], count: int, seed: int = DEFAULT_SEED
                      ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(train spk2utt, held-back spk2utt)``: ``count`` speakers (seeded, order-independent) held back."""
    if not 0 < count < len(spk2utt):
        raise ValueError(f"cannot hold back {count} of {len(spk2utt)} speakers")
    ranked = sorted(spk2utt, key=lambda s: (hashlib.sha256(f"{seed}/holdout/{s}".encode()).digest(), s))
    held = set(ranked[:count])
    return ({s: list(u) for s, u in spk2utt.items() if s not in held},
            {s: list(u) for s, u in spk2utt.items() if s in held})


def limit_utterances(spk2utt: Mapping[str, Iterable[str]], per_speaker: int, seed: int = DEFAULT_SEED
                     ) -> dict[str, list[str]]:
    """At most ``per_speaker`` utterances of each speaker (seeded, order-independent; 0 = all), so that the
    dev trials stay few on big corpora: 121 held-back VoxCeleb1 speakers with all of their ~123 utterances
    would make ~110 million pairs, with 10 each 732,000.

    Example:
        >>> limit_utterances({"a": ["a1", "a2", "a3"], "b": ["b1"]}, 2)
        {'a': ['a1', 'a3'], 'b': ['b1']}
    """
    if per_speaker < 0:
        raise ValueError(f"per_speaker must be >= 0, got {per_speaker}")
    out = {}
    for speaker, utts in spk2utt.items():
        utts = list(utts)
        if per_speaker and len(utts) > per_speaker:
            kept = set(sorted(utts, key=lambda u: (hashlib.sha256(f"{seed}/devutt/{u}".encode()).digest(), u))
                       [:per_speaker])
            utts = [u for u in utts if u in kept]
        out[speaker] = utts
    return out


def dev_trials(held_spk2utt: Mapping[str, Iterable[str]], nontarget_ratio: float | None = None,
               seed: int = DEFAULT_SEED) -> list[Trial]:
    """Trials :class:`~speechattn.data.trials.Trial` ``(label, utt1, utt2)`` among the held-back utterances: every same-speaker pair, and every
    different-speaker pair (``nontarget_ratio=None``) or a seeded sample of ``ratio ×`` as many
    (:func:`speechattn.data.sid_splits.make_trials`)."""
    utt2spk = {u: s for s, utts in held_spk2utt.items() for u in utts}
    if nontarget_ratio is None:
        total = len(utt2spk) * (len(utt2spk) - 1) // 2
        targets = sum(len(list(itertools.combinations(list(u), 2))) for u in held_spk2utt.values())
        nontarget_ratio = (total - targets) / max(targets, 1)
    return make_trials(utt2spk, nontarget_ratio, seed)
