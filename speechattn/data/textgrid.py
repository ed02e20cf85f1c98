"""Praat TextGrids: phone tiers of forced alignments (Montreal Forced Aligner) in, frame labels out as tiers.

Reading and writing go through praatio (``praatio.textgrid``), which parses both the long and the short
TextGrid formats; this module only maps intervals to our :class:`~speechattn.data.alignments.Segment` and
phone symbols.

**Reading MFA output.** MFA writes one TextGrid per utterance with tiers ``words`` and ``phones`` (MFA 1.x
with speaker tiers: ``SPEAKER - words`` / ``SPEAKER - phones``; both are found). Its ARPAbet phones carry
stress digits (``AH0``, ``IY1``) and silence is an empty interval (older versions: ``sil``, ``sp``).
:func:`mfa_arpabet_phone` maps a label to our 39 ARPAbet phones + ``SIL``; ``spn`` (spoken noise, MFA's
phone for out-of-vocabulary words) has no phone identity and is reported as :data:`SPOKEN_NOISE`.

**Writing frame labels.** :func:`write_frame_labels_textgrid` writes a ``phones`` tier whose intervals are
runs of equal frame labels, with boundaries half-way between frame centres (frame *i*: centre
``10 i + 12.5`` ms, span ``[10 i + 7.5, 10 i + 17.5)`` ms; the first interval starts at 0, the last ends at
the recording's end). Reading the tier back with the centre rule (:func:`frame_labels_from_segments`) gives
exactly the same labels. Silence is written as an empty interval, as MFA does, so Praat shows only phones.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "u1.TextGrid")
    >>> write_frame_labels_textgrid(path, ["SIL", "SIL", "AH", "AH", "T", "SIL"], duration=0.075)
    >>> [(round(s.start, 4), round(s.end, 4), s.label) for s in read_phone_tier(path)]
    [(0.0, 0.0275, 'SIL'), (0.0275, 0.0475, 'AH'), (0.0475, 0.0575, 'T'), (0.0575, 0.075, 'SIL')]
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from praatio import textgrid as praat_textgrid
from praatio.utilities import errors as praat_errors

from speechattn.data.alignments import ARPABET_PHONES, SILENCE, Segment
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["TextGridError", "MissingTierError", "SPOKEN_NOISE", "mfa_arpabet_phone", "find_tier_name",
           "read_interval_tier", "read_phone_tier", "frame_label_segments", "write_frame_labels_textgrid"]

SPOKEN_NOISE = "SPN"
_MFA_SILENCE = {"", "sil", "sp", "<eps>", "silence"}
_MFA_NOISE = {"spn", "<unk>"}
_ARPABET = frozenset(ARPABET_PHONES)
_STRESS = re.compile(r"^([A-Za-z]+)[012]$")


class TextGridError(KaldiDataError):
    """A TextGrid that cannot be used; the message starts with ``"{path}:{line}: "``."""


class MissingTierError(TextGridError):
    """The TextGrid has no tier of the requested name."""


def mfa_arpabet_phone(label: str) -> str | None:
    """Our symbol for an MFA ARPAbet label: ``AH0`` -> ``AH``, ``""``/``sil``/``sp`` -> ``SIL``,
    ``spn`` -> :data:`SPOKEN_NOISE`; None when it is not ARPAbet (e.g. an IPA label of MFA's english_mfa model).
    """
    text = label.strip()
    if text.lower() in _MFA_SILENCE:
        return SILENCE
    if text.lower() in _MFA_NOISE:
        return SPOKEN_NOISE
    match = _STRESS.match(text)
    base = (match.group(1) if match else text).upper()
    return base if base in _ARPABET else None


def _open(path: Path) -> praat_textgrid.Textgrid:
    if not path.is_file():
        raise TextGridError(f"{path}:0: TextGrid file not found")
    try:
        return praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    except (praat_errors.PraatioException, ValueError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise TextGridError(f"{path}:0: not a readable TextGrid: {type(e).__name__}: {e}") from e


def find_tier_name(names: Sequence[str], tier: str) -> str | None:
    """``tier`` itself, or the only ``"SPEAKER - tier"`` (MFA 1.x speaker tiers); None if neither exists."""
    if tier in names:
        return tier
    suffixed = [name for name in names if name.endswith(f" - {tier}")]
    return suffixed[0] if len(suffixed) == 1 else None


def _line_of(path: Path, tier_name: str, interval_index: int | None) -> int:
    """Line number of a tier's name (or of its ``interval_index``-th interval's label), 0 if not found.

    praatio does not report positions; this scans the text for the tier header and, in the long format,
    its ``intervals [k]:`` lines. Only used to point error messages at the right place.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    quoted = f'"{tier_name}"'
    tier_line = next((i for i, line in enumerate(lines) if line.strip() in (quoted, f"name = {quoted}")), None)
    if tier_line is None:
        return 0
    if interval_index is None:
        return tier_line + 1
    marker = f"intervals [{interval_index + 1}]"
    for i in range(tier_line, len(lines)):
        if lines[i].strip().startswith(marker):
            return min(i + 4, len(lines))  # "text = ..." is three lines below the "intervals [k]:" line
    return tier_line + 1


def read_interval_tier(path: str | os.PathLike, tier: str) -> list[Segment]:
    """All intervals of ``tier`` (empty ones included, label ``""``) as segments in seconds, in time order.

    Raises :class:`MissingTierError` (naming the tiers present) when there is no such interval tier, and
    :class:`TextGridError` for an unreadable file or overlapping intervals.
    """
    path = Path(path)
    grid = _open(path)
    name = find_tier_name(grid.tierNames, tier)
    if name is None:
        raise MissingTierError(f"{path}:0: no tier '{tier}' (tiers: {', '.join(grid.tierNames) or 'none'})")
    found = grid.getTier(name)
    if not isinstance(found, praat_textgrid.IntervalTier):
        raise MissingTierError(f"{path}:{_line_of(path, name, None)}: tier '{name}' is a point tier, "
                               f"not an interval tier")
    segments = []
    previous_end = float("-inf")
    for index, interval in enumerate(found.entries):
        start, end = float(interval.start), float(interval.end)
        if start < previous_end - 1e-9 or end < start:
            raise TextGridError(f"{path}:{_line_of(path, name, index)}: interval {index + 1} of tier '{name}' "
                                f"[{start}, {end}] overlaps the previous one or is reversed")
        segments.append(Segment(start, end - start, interval.label))
        previous_end = end
    return segments


def read_phone_tier(path: str | os.PathLike, tier: str = "phones",
                    map_label: Callable[[str], str | None] = mfa_arpabet_phone) -> list[Segment]:
    """The ``tier`` intervals with labels mapped by ``map_label`` (default: MFA ARPAbet -> our phone set).

    Adjacent intervals with the same mapped label are kept apart (they are separate phones). A label
    ``map_label`` returns None for is an error naming the file and the interval's line.
    """
    path = Path(path)
    segments = read_interval_tier(path, tier)
    mapped = []
    for index, segment in enumerate(segments):
        symbol = map_label(segment.label)
        if symbol is None:
            grid_tier = find_tier_name(_open(path).tierNames, tier) or tier
            raise TextGridError(f"{path}:{_line_of(path, grid_tier, index)}: phone '{segment.label}' of tier "
                                f"'{grid_tier}' is not in the phone set (ARPAbet with optional stress digit)")
        mapped.append(Segment(segment.start, segment.duration, symbol))
    return mapped


def frame_label_segments(labels: Sequence[str], duration: float, *, frame_shift: float = 0.010,
                         frame_length: float = 0.025) -> list[tuple[float, float, str]]:
    """Runs of equal frame labels as ``(start, end, label)`` in seconds, boundaries half-way between frame
    centres (``i · shift + (length - shift) / 2``), first start 0, last end ``duration``.

    ``duration`` must reach the end of the last frame's window (``(T - 1) · shift + length``), up to 1 ms:
    that is the recording's length as the features saw it.
    """
    if not labels:
        return []
    last_window_end = (len(labels) - 1) * frame_shift + frame_length
    if duration < last_window_end - 1e-3:
        raise ValueError(f"duration {duration} s is shorter than the {len(labels)} frames' windows "
                         f"({last_window_end:.3f} s)")
    offset = (frame_length - frame_shift) / 2
    runs = []
    run_start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[run_start]:
            start = 0.0 if run_start == 0 else round(run_start * frame_shift + offset, 6)
            end = duration if i == len(labels) else round(i * frame_shift + offset, 6)
            runs.append((start, end, labels[run_start]))
            run_start = i
    return runs


def write_frame_labels_textgrid(path: str | os.PathLike, labels: Sequence[str], duration: float, *,
                                tier: str = "phones", silence: str = SILENCE, silence_text: str = "",
                                frame_shift: float = 0.010, frame_length: float = 0.025) -> None:
    """Write per-frame labels as a long-format TextGrid with one interval tier (atomically).

    ``silence`` frames are written as ``silence_text`` (default empty, MFA's convention). The file opens in
    Praat and reads back with :func:`read_phone_tier` to the same frame labels.
    """
    path = Path(path)
    runs = frame_label_segments(labels, duration, frame_shift=frame_shift, frame_length=frame_length)
    entries = [(start, end, silence_text if label == silence else label) for start, end, label in runs]
    grid = praat_textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=duration)
    grid.addTier(praat_textgrid.IntervalTier(tier, [e for e in entries if e[2] != ""], 0.0, duration))
    # praatio writes to a path; render to a temporary file next to the target and publish it atomically.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)
        atomic_write_text(path, tmp.read_text(encoding="utf-8"))
    finally:
        tmp.unlink(missing_ok=True)
