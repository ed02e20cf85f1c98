"""Phone alignments (CTM, HTS .lab) to per-frame labels, and the phone inventory.

Times are converted to integer units of 100 ns (HTK units) before any comparison: CTM times are in 10 ms
steps written as decimals, and comparing the float 0.67 with frame centres would misassign frames that
sit on a boundary. Frame convention (docs/architecture.md): frame i covers [i*shift, i*shift + length)
and takes the label of the segment under its centre, i*shift + length/2.

Example:
    >>> segs = [Segment(0.00, 0.03, "SIL"), Segment(0.03, 0.02, "HH"), Segment(0.05, 0.04, "IY")]
    >>> labels = frame_labels_from_segments(segs, num_frames=9)
    >>> labels                      # centres 12.5, 22.5, 32.5, ... ms
    ['SIL', 'SIL', 'HH', 'HH', 'IY', 'IY', 'IY', 'IY', 'SIL']
    >>> labels.num_filled           # the last centre (92.5 ms) is after the last segment
    1
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

from speechattn.data.kaldi_dir import KaldiDataError, read_text_lines
from speechattn.utils.atomic import atomic_open

logger = logging.getLogger(__name__)

SILENCE = "SIL"
ARPABET_PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
                  "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
                  "UW", "V", "W", "Y", "Z", "ZH")
PHONES: tuple[str, ...] = (SILENCE,) + tuple(sorted(ARPABET_PHONES))
"""The 40 phone symbols: ``SIL`` (id 0) then the 39 ARPAbet phones (stress removed), sorted."""

UNITS_PER_SECOND = 10_000_000  # 100 ns (HTK) units: exact for CTM (10 ms) and HTS (100 ns) times.

# CMU/Festival (radio phone set) symbols that are not just the upper-cased ARPAbet phone.
FESTIVAL_TO_ARPABET = {"ax": "AH", "pau": SILENCE, "sil": SILENCE, "h#": SILENCE, "brth": SILENCE}


@dataclass(frozen=True)
class Segment:
    """A labelled time interval ``[start, start + duration)`` in seconds."""

    start: float
    duration: float
    label: str

    @property
    def end(self) -> float:
        return self.start + self.duration


def to_units(seconds: float) -> int:
    """Seconds -> integer 100 ns units (rounded, so 0.67 s is exactly 6_700_000)."""
    return round(seconds * UNITS_PER_SECOND)


class FrameLabels(list):
    """``list[str]`` of per-frame labels with ``num_filled``: frames whose centre no segment covers."""

    def __init__(self, labels: Sequence[str] = (), num_filled: int = 0) -> None:
        super().__init__(labels)
        self.num_filled = num_filled


def _check_order(segments: Sequence[Segment], where: str = "") -> None:
    previous_end = 0
    for index, segment in enumerate(segments):
        start, end = to_units(segment.start), to_units(segment.end)
        if start < 0 or end < start:
            raise ValueError(f"{where}segment {index} {segment} has a negative start or duration")
        if start < previous_end:
            raise ValueError(f"{where}segment {index} {segment} starts before the previous one ends "
                             f"(segments must be sorted and not overlap)")
        previous_end = end


def frame_labels_from_segments(segments: Sequence[Segment], num_frames: int, *, frame_shift: float = 0.010,
                               frame_length: float = 0.025, fill: str = SILENCE) -> FrameLabels:
    """One label per frame: the segment under the frame's centre ``i * shift + length / 2``.

    ``segments`` must be sorted and non-overlapping (ValueError otherwise). A centre on a boundary
    belongs to the later segment (segments are half-open). Centres in gaps or after the last segment get
    ``fill``; their number is ``result.num_filled`` (also logged at debug level). Segments after the last
    frame are ignored.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    _check_order(segments)
    shift, half_length = to_units(frame_shift), to_units(frame_length) // 2
    if to_units(frame_length) % 2:
        raise ValueError(f"frame_length {frame_length} s is not a whole number of 200 ns units")
    bounds = [(to_units(s.start), to_units(s.end), s.label) for s in segments]
    labels: list[str] = []
    num_filled, index = 0, 0
    for frame in range(num_frames):
        centre = frame * shift + half_length
        while index < len(bounds) and bounds[index][1] <= centre:
            index += 1  # centres only increase, so segments ending before this centre are done
        if index < len(bounds) and bounds[index][0] <= centre:
            labels.append(bounds[index][2])
        else:
            labels.append(fill)
            num_filled += 1
    if num_filled:
        logger.debug("%d of %d frames are not covered by a segment, labelled %s", num_filled, num_frames, fill)
    return FrameLabels(labels, num_filled)


def read_ctm(path: str | os.PathLike, phones: Collection[str] | None = None) -> dict[str, list[Segment]]:
    """Read a CTM file ``UTT CHANNEL START DURATION LABEL [CONFIDENCE]`` into ``{utt: [Segment]}``.

    Raises :class:`KaldiDataError` naming file and line for a malformed line, a label not in ``phones``
    (when given), or a segment that starts before the previous segment of the same utterance ends
    (unsorted or overlapping). Utterances may appear in any order.
    """
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: CTM file not found")
    allowed = set(phones) if phones is not None else None
    result: dict[str, list[Segment]] = {}
    last_end: dict[str, int] = {}
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if len(fields) not in (5, 6):
            raise KaldiDataError(f"{path}:{lineno}: expected 'UTT CHANNEL START DURATION LABEL', "
                                 f"got {len(fields)} fields: {line.strip()!r}")
        utt, _, start_text, duration_text, label = fields[:5]
        try:
            start, duration = float(start_text), float(duration_text)
        except ValueError:
            raise KaldiDataError(f"{path}:{lineno}: start and duration must be numbers: "
                                 f"{line.strip()!r}") from None
        if not (start >= 0 and duration >= 0):  # also rejects NaN
            raise KaldiDataError(f"{path}:{lineno}: negative or invalid start/duration: {line.strip()!r}")
        if allowed is not None and label not in allowed:
            raise KaldiDataError(f"{path}:{lineno}: unknown phone '{label}' (not in the phone set)")
        start_units = to_units(start)
        if start_units < last_end.get(utt, 0):
            raise KaldiDataError(f"{path}:{lineno}: segment of '{utt}' at {start_text} s starts before "
                                 f"the previous one ends (unsorted or overlapping)")
        last_end[utt] = start_units + to_units(duration)
        result.setdefault(utt, []).append(Segment(start, duration, label))
    return result


_HTS_CURRENT_PHONE = re.compile(r"^[^-+]*-([^-+]+)\+")


def festival_to_arpabet(phone: str) -> str:
    """Map a CMU/Festival phone (``ax``, ``pau``, ``hh``...) to our set (``AH``, ``SIL``, ``HH``...)."""
    return FESTIVAL_TO_ARPABET.get(phone.lower(), phone.upper())


def read_hts_lab(path: str | os.PathLike, phones: Collection[str] | None = PHONES) -> list[Segment]:
    """Read HTS labels ``START END LABEL`` (times in 100 ns units) into phone segments.

    For full-context labels the phone is the field between ``-`` and ``+`` (``x^sil-hh+iy=...`` -> hh);
    a plain label (monophone .lab) is used as is. Phones are mapped with :func:`festival_to_arpabet` and
    must be in ``phones`` (``None`` disables the check). Errors name file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: label file not found")
    allowed = set(phones) if phones is not None else None
    segments: list[Segment] = []
    previous_end = 0
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if not fields:
            continue  # HTS files often end with a blank line
        if len(fields) != 3:
            raise KaldiDataError(f"{path}:{lineno}: expected 'START END LABEL', got {line.strip()!r}")
        try:
            start, end = int(fields[0]), int(fields[1])
        except ValueError:
            raise KaldiDataError(f"{path}:{lineno}: START and END must be integers (100 ns units)") from None
        if end < start or start < previous_end:
            raise KaldiDataError(f"{path}:{lineno}: segment [{start}, {end}) is reversed, unsorted or "
                                 f"overlaps the previous one (ends at {previous_end})")
        match = _HTS_CURRENT_PHONE.match(fields[2])
        phone = festival_to_arpabet(match.group(1) if match else fields[2])
        if allowed is not None and phone not in allowed:
            raise KaldiDataError(f"{path}:{lineno}: unknown phone '{phone}' (from label {fields[2][:40]!r})")
        segments.append(Segment(start / UNITS_PER_SECOND, (end - start) / UNITS_PER_SECOND, phone))
        previous_end = end
    return segments


def write_phone_table(path: str | os.PathLike, phones: Sequence[str] = PHONES) -> None:
    """Write a Kaldi symbol table ``SYMBOL ID`` (ids 0..n-1 in order) atomically."""
    if len(set(phones)) != len(phones):
        raise ValueError(f"duplicated phone symbols in {list(phones)}")
    with atomic_open(path, "w") as f:
        for index, phone in enumerate(phones):
            f.write(f"{phone} {index}\n")


def read_phone_table(path: str | os.PathLike) -> list[str]:
    """Read a symbol table ``SYMBOL ID``; ids must be 0, 1, 2... in file order. Returns symbols by id."""
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: phone table not found")
    phones: list[str] = []
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise KaldiDataError(f"{path}:{lineno}: expected 'SYMBOL ID', got {line.strip()!r}")
        symbol, id_text = fields
        if id_text != str(len(phones)):
            raise KaldiDataError(f"{path}:{lineno}: expected id {len(phones)} for '{symbol}', got {id_text}")
        if symbol in phones:
            raise KaldiDataError(f"{path}:{lineno}: duplicated symbol '{symbol}'")
        phones.append(symbol)
    if not phones:
        raise KaldiDataError(f"{path}:0: empty phone table")
    return phones
