"""Verification trial lists: the one trial type and its VoxCeleb text format.

One trial per line, ``LABEL UTT1 UTT2``, LABEL 1 for a target (same speaker) and 0 for a non-target trial.
:class:`Trial` is a named tuple ``(label, utt1, utt2)``: it unpacks like the plain tuples metrics code
uses (``for label, u1, u2 in trials``) and names its fields for data preparation (``t.utt1``, ``t.target``).

Example:
    >>> t = Trial(1, "a1", "a2")
    >>> t.target, t == (1, "a1", "a2")
    (True, True)
    >>> format_trials([t, Trial(0, "a1", "b1")])
    '1 a1 a2\\n0 a1 b1\\n'
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, NamedTuple

from speechattn.data.kaldi_dir import KaldiDataError, read_fields
from speechattn.utils.atomic import atomic_write_text

__all__ = ["Trial", "format_trials", "write_trials", "read_trials", "read_numbered_trials"]


class Trial(NamedTuple):
    """One verification trial: ``label`` 1 (target) or 0 (non-target), and the two utterances."""

    label: int
    utt1: str
    utt2: str

    @property
    def target(self) -> bool:
        return bool(self.label)


def format_trials(trials: Iterable[tuple[int, str, str]]) -> str:
    """VoxCeleb-style text, one ``LABEL UTT1 UTT2`` line per trial; raises ValueError naming a bad trial."""
    lines = []
    for number, (label, utt1, utt2) in enumerate(trials, start=1):
        if label not in (0, 1):
            raise ValueError(f"trial {number}: label must be 0 or 1, got {label!r}")
        if not utt1 or not utt2 or any(ch.isspace() for ch in utt1 + utt2):
            raise ValueError(f"trial {number}: utterance ids must be non-empty without whitespace")
        lines.append(f"{int(label)} {utt1} {utt2}\n")
    return "".join(lines)


def write_trials(path: str | os.PathLike, trials: Iterable[tuple[int, str, str]]) -> None:
    """Write :func:`format_trials` output to ``path`` atomically."""
    atomic_write_text(Path(path), format_trials(trials))


def read_numbered_trials(path: str | os.PathLike, what: str = "trials file") -> list[tuple[int, Trial]]:
    """``(line number, trial)`` of a ``LABEL UTT1 UTT2`` list (blank lines skipped), for callers that check
    more per trial and must name the line (data preparation)."""
    trials: list[tuple[int, Trial]] = []
    for line_number, (label, utt1, utt2) in read_fields(path, 3, "'LABEL UTT1 UTT2'", what):
        if label not in ("0", "1"):
            raise KaldiDataError(f"{path}:{line_number}: label must be 1 (target) or 0 (non-target), got {label!r}")
        trials.append((line_number, Trial(int(label), utt1, utt2)))
    return trials


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Read a ``LABEL UTT1 UTT2`` trial list; blank lines are skipped.

    Raises:
        KaldiDataError: ``"{path}:{line}: ..."`` for a line without exactly three fields or with a label
            other than 0/1.
    """
    return [trial for _, trial in read_numbered_trials(path)]
