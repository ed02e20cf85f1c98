"""TIMIT (LDC93S1): phone sets and their folding, ``.PHN`` files, audio headers and the corpus layout.

**Phone sets.** TIMIT transcribes 61 phones (``.PHN``, lower case). The standard recipe of Lee & Hon
(1989, "Speaker-independent phone recognition using hidden Markov models", IEEE Trans. ASSP 37(11)) trains
on 48 phones and scores on 39: the glottal stop ``q`` is deleted, 61 -> 48 merges allophones and closures
(``FOLD_61_TO_48``), 48 -> 39 merges what is not scored apart (``FOLD_48_TO_39``). Kaldi's
``egs/timit/s5/conf/phones.60-48-39.map`` is the same map; ``tests/test_timit.py`` checks ours against it.

**Frame labels.** ``.PHN`` lines are ``START END PHONE`` in samples (16 kHz), ``END`` exclusive. Frame *i*
covers samples ``[160 i, 160 i + 400)`` and takes the phone under its centre, sample ``160 i + 200``
(docs/architecture.md): :func:`frame_labels_from_phn` does this in integer samples, so a boundary on a
frame centre goes to the later segment exactly, as in :func:`speechattn.data.alignments.frame_labels_from_segments`.
:func:`phn_from_frame_labels` is its inverse (boundaries half-way between frame centres, sample
``160 i + 120``): ``frames -> .PHN -> frames`` is the identity.

Symbols in our data directories are the folded phones in upper case (``SIL`` = the 48/39-set ``sil``, id 0
in ``phones.txt``), like the ARPAbet symbols of the other recipes; the tables below keep TIMIT's spelling.

Example:
    >>> fold_61_to_39("ax-h"), fold_61_to_39("bcl"), fold_61_to_48("bcl"), fold_61_to_48("q") is None
    ('ah', 'sil', 'vcl', True)
    >>> segments = [PhnSegment(0, 2000, "h#"), PhnSegment(2000, 2600, "ix"), PhnSegment(2600, 4000, "h#")]
    >>> frame_labels_from_phn(segments, num_frames=23)[10:17]  # centres 1800, 1960, ..., 2600 (boundary: later)
    ['h#', 'h#', 'ix', 'ix', 'ix', 'h#', 'h#']
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

from speechattn.data.alignments import FrameLabels
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SHIFT_SAMPLES, FRAME_LENGTH_SAMPLES = 160, 400  # 10 ms / 25 ms at 16 kHz

# The 61 symbols of TIMIT's PHONCODE.DOC, grouped as there.
TIMIT61: tuple[str, ...] = (
    "b", "d", "g", "p", "t", "k", "dx", "q",                                    # stops
    "jh", "ch",                                                                 # affricates
    "s", "sh", "z", "zh", "f", "th", "v", "dh",                                 # fricatives
    "m", "n", "ng", "em", "en", "eng", "nx",                                    # nasals
    "l", "r", "w", "y", "hh", "hv", "el",                                       # semivowels and glides
    "iy", "ih", "eh", "ey", "ae", "aa", "aw", "ay", "ah", "ao", "oy", "ow", "uh", "uw", "ux", "er", "ax",
    "ix", "axr", "ax-h",                                                        # vowels
    "pau", "epi", "h#",                                                         # others
    "bcl", "dcl", "gcl", "pcl", "tcl", "kcl",                                   # closures
)
GLOTTAL_STOP = "q"

# Lee & Hon's merges, as groups: the first symbol of a group is the class the others fold into.
_GROUPS_61_TO_48 = (("ax", "ax-h"), ("er", "axr"), ("hh", "hv"), ("m", "em"), ("n", "nx"), ("ng", "eng"),
                    ("uw", "ux"), ("vcl", "bcl", "dcl", "gcl"), ("cl", "pcl", "tcl", "kcl"), ("sil", "h#", "pau"))
_GROUPS_48_TO_39 = (("aa", "ao"), ("ah", "ax"), ("ih", "ix"), ("l", "el"), ("n", "en"), ("sh", "zh"),
                    ("sil", "cl", "vcl", "epi"))


def _fold_table(source: Iterable[str], groups: Sequence[Sequence[str]]) -> dict[str, str]:
    table = {symbol: symbol for symbol in source}
    for target, *members in groups:
        for member in members:
            table[member] = target
    return table


FOLD_61_TO_48: dict[str, str | None] = {**_fold_table((p for p in TIMIT61 if p != GLOTTAL_STOP), _GROUPS_61_TO_48),
                                        GLOTTAL_STOP: None}
"""61 -> 48 (``q`` -> None: deleted)."""
TIMIT48: tuple[str, ...] = tuple(sorted({p for p in FOLD_61_TO_48.values() if p is not None}))
FOLD_48_TO_39: dict[str, str] = _fold_table(TIMIT48, _GROUPS_48_TO_39)
TIMIT39: tuple[str, ...] = tuple(sorted(set(FOLD_48_TO_39.values())))
SILENCE = "sil"


def fold_61_to_48(phone: str) -> str | None:
    """A ``.PHN`` symbol in the 48-phone training set; None for the deleted glottal stop."""
    return FOLD_61_TO_48[phone]


def fold_61_to_39(phone: str) -> str | None:
    """A ``.PHN`` symbol in the 39-phone scoring set; None for the deleted glottal stop."""
    folded = FOLD_61_TO_48[phone]
    return None if folded is None else FOLD_48_TO_39[folded]


def data_symbol(phone: str) -> str:
    """Spelling of a 48/39-set phone in our data dirs and ``phones.txt``: upper case (``sil`` -> ``SIL``)."""
    return phone.upper()


def phone_table_48() -> list[str]:
    """``phones.txt`` order of the training set: ``SIL`` (id 0), then the other 47 sorted."""
    return [data_symbol(SILENCE)] + [data_symbol(p) for p in TIMIT48 if p != SILENCE]


def phone_table_39() -> list[str]:
    """The 39 scoring classes, ``SIL`` first."""
    return [data_symbol(SILENCE)] + [data_symbol(p) for p in TIMIT39 if p != SILENCE]


def scoring_map_48_to_39() -> dict[str, str]:
    """Data-dir symbol of each training phone -> its scoring class (``VCL`` -> ``SIL``, ``AO`` -> ``AA``...)."""
    return {data_symbol(p48): data_symbol(p39) for p48, p39 in FOLD_48_TO_39.items()}


# ---------------------------------------------------------------------------------------------------------
# .PHN files
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhnSegment:
    """One ``.PHN`` line: samples ``[start, end)`` and the phone (61-set symbol)."""

    start: int
    end: int
    phone: str


class PhnOverhangError(KaldiDataError):
    """A ``.PHN`` segment ends after the audio's last sample (the file belongs to other audio)."""


def read_phn(path: str | os.PathLike, phones: Iterable[str] | None = TIMIT61, *,
             num_samples: int | None = None) -> list[PhnSegment]:
    """Read a ``.PHN`` (or ``.WRD``) file: ``START END LABEL`` per line, in samples.

    Checks, each an error ``"{path}:{line}: ..."`` (:class:`KaldiDataError`): three fields, integer
    ``0 <= START < END``, segments in order without overlap, the label in ``phones`` (case-insensitive;
    ``None`` accepts any label, for ``.WRD``) and, when ``num_samples`` is given, ``END <= num_samples``
    (:class:`PhnOverhangError`). Labels are returned in lower case. Gaps between segments are allowed (their
    frames get the fill label of :func:`frame_labels_from_phn`).
    """
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: file not found")
    allowed = None if phones is None else set(phones)
    segments: list[PhnSegment] = []
    with open(path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue  # some copies end with a blank line
            if len(fields) != 3:
                raise KaldiDataError(f"{path}:{lineno}: expected 'START END LABEL', got {line.strip()!r}")
            try:
                start, end = int(fields[0]), int(fields[1])
            except ValueError:
                raise KaldiDataError(f"{path}:{lineno}: START and END must be integers (samples), "
                                     f"got {line.strip()!r}") from None
            label = fields[2].lower()
            if not 0 <= start < end:
                raise KaldiDataError(f"{path}:{lineno}: need 0 <= START < END, got {start} {end}")
            if segments and start < segments[-1].end:
                raise KaldiDataError(f"{path}:{lineno}: segment starts at {start}, before the previous one ends "
                                     f"({segments[-1].end}): unsorted or overlapping")
            if allowed is not None and label not in allowed:
                raise KaldiDataError(f"{path}:{lineno}: unknown phone '{fields[2]}' (not one of TIMIT's 61)")
            if num_samples is not None and end > num_samples:
                raise PhnOverhangError(f"{path}:{lineno}: segment '{line.strip()}' ends after the audio "
                                       f"({num_samples} samples)")
            segments.append(PhnSegment(start, end, label))
    if not segments:
        raise KaldiDataError(f"{path}:0: no segments")
    return segments


def write_phn(path: str | os.PathLike, segments: Iterable[PhnSegment]) -> None:
    """Write ``START END LABEL`` lines atomically (TIMIT's format)."""
    atomic_write_text(path, "".join(f"{s.start} {s.end} {s.phone}\n" for s in segments))


def frame_labels_from_phn(segments: Sequence[PhnSegment], num_frames: int, *, fill: str = "h#",
                          shift: int = FRAME_SHIFT_SAMPLES, length: int = FRAME_LENGTH_SAMPLES) -> FrameLabels:
    """One label per frame: the segment under the frame centre ``shift · i + length // 2`` (samples).

    Segments are half-open ``[start, end)``, so a centre on a boundary belongs to the later segment. A
    centre in a gap or after the last segment gets ``fill`` (their number: ``result.num_filled``).
    ``segments`` must be sorted (:func:`read_phn`).
    """
    labels: list[str] = []
    index = num_filled = 0
    for frame in range(num_frames):
        centre = frame * shift + length // 2
        while index < len(segments) and segments[index].end <= centre:
            index += 1
        inside = index < len(segments) and segments[index].start <= centre
        labels.append(segments[index].phone if inside else fill)
        num_filled += not inside
    return FrameLabels(labels, num_filled)


def phn_from_frame_labels(labels: Sequence[str], num_samples: int, *, shift: int = FRAME_SHIFT_SAMPLES,
                          length: int = FRAME_LENGTH_SAMPLES) -> list[PhnSegment]:
    """Segments whose frame labels (:func:`frame_labels_from_phn`) are exactly ``labels``.

    A run of frames ``[a, b)`` becomes samples ``[shift·a + (length - shift)//2 ... )``, i.e. boundaries
    half-way between the centres of frames ``a - 1`` and ``a``; the first segment starts at 0 and the last
    ends at ``num_samples`` (which must cover the last frame).
    """
    if not labels:
        return []
    last_frame_end = (len(labels) - 1) * shift + length
    if num_samples < last_frame_end:
        raise ValueError(f"{len(labels)} frames need at least {last_frame_end} samples, got {num_samples}")
    half_way = (length - shift) // 2  # centre of frame a-1 plus half a shift: 160 a + 120 at 16 kHz
    segments: list[PhnSegment] = []
    run_start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[run_start]:
            start = 0 if run_start == 0 else shift * run_start + half_way
            end = num_samples if i == len(labels) else shift * i + half_way
            segments.append(PhnSegment(start, end, labels[run_start]))
            run_start = i
    return segments


def merge_glottal_stops(segments: Sequence[PhnSegment]) -> tuple[list[PhnSegment], int]:
    """Delete ``q`` the way Kaldi's transcripts do, for frame labels: its samples join the previous segment
    when it touches it, else the next one. Returns ``(segments, number of q segments merged)``."""
    out: list[PhnSegment] = []
    merged = 0
    pending_start: int | None = None  # start of q samples waiting for the next real segment
    for segment in segments:
        if segment.phone == GLOTTAL_STOP:
            merged += 1
            if pending_start is None and out and out[-1].end == segment.start:
                out[-1] = PhnSegment(out[-1].start, segment.end, out[-1].phone)
            elif pending_start is None:
                pending_start = segment.start
            continue
        if pending_start is not None:
            segment = PhnSegment(pending_start, segment.end, segment.phone)
            pending_start = None
        out.append(segment)
    return out, merged


def fold_segments(segments: Sequence[PhnSegment], fold: dict[str, str | None]) -> list[PhnSegment]:
    """Relabel segments through ``fold`` (e.g. :data:`FOLD_61_TO_48`); call :func:`merge_glottal_stops` first."""
    out = []
    for segment in segments:
        folded = fold[segment.phone]
        if folded is None:
            raise ValueError(f"segment {segment} folds to nothing: merge glottal stops first")
        out.append(PhnSegment(segment.start, segment.end, folded))
    return out


# ---------------------------------------------------------------------------------------------------------
# Audio: NIST SPHERE (LDC's copies) or RIFF (converted copies); soundfile reads both
# ---------------------------------------------------------------------------------------------------------


def audio_format(path: str | os.PathLike) -> str:
    """``"NIST"`` (SPHERE) or ``"WAV"`` (RIFF) from the file header, as libsndfile detects it.

    Raises KaldiDataError for anything else or an unreadable header (e.g. a shorten-compressed SPHERE
    file, which libsndfile cannot decode: convert it with ``sph2pipe -f wav``).
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise KaldiDataError(f"{path}:0: cannot read the audio header: {e}") from e
    if info.format not in ("NIST", "WAV", "WAVEX"):
        raise KaldiDataError(f"{path}:0: expected a NIST SPHERE or RIFF WAV file, found {info.format}")
    return "NIST" if info.format == "NIST" else "WAV"


# ---------------------------------------------------------------------------------------------------------
# Corpus layout: {TRAIN,TEST}/DR1..DR8/<SPEAKER>/<UTT>.{WAV,PHN,WRD,TXT}, any letter case
# ---------------------------------------------------------------------------------------------------------

PARTS = ("TRAIN", "TEST")
_DIALECT = re.compile(r"^DR[1-8]$")
SPEAKER_ID = re.compile(r"^[FM][A-Z]{3}[0-9]$")
_UTTERANCE = re.compile(r"^S[AIX][0-9]+$")


@dataclass(frozen=True)
class TimitUtterance:
    """One sentence of the corpus. IDs are upper case whatever the copy's case; paths are as found."""

    part: str          # TRAIN or TEST
    dialect: str       # DR1..DR8
    speaker: str       # e.g. FCJF0 (first letter: gender)
    sentence: str      # e.g. SI1027
    wav: Path
    phn: Path | None   # None when the copy lacks it
    wrd: Path | None
    txt: Path | None

    @property
    def utt_id(self) -> str:
        """Kaldi utterance ID ``SPEAKER_SENTENCE`` (speaker prefix: sorts with the speaker)."""
        return f"{self.speaker}_{self.sentence}"

    @property
    def is_sa(self) -> bool:
        """The two dialect sentences SA1/SA2, read by every speaker (excluded from the standard sets)."""
        return self.sentence.startswith("SA")


def _children(directories: Sequence[Path]) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    """Entries of ``directories`` by upper-cased name: ``({NAME: [dirs]}, {NAME: file})``.

    Folders whose names differ only in case (``DR1`` and ``dr1``, as merged copies have) are one folder;
    two *files* differing only in case are an error (which one is meant is unknown).
    """
    folders: dict[str, list[Path]] = {}
    files: dict[str, Path] = {}
    for directory in directories:
        for entry in sorted(directory.iterdir()):
            key = entry.name.upper()
            if entry.is_dir():
                folders.setdefault(key, []).append(entry)
            elif key in files:
                raise KaldiDataError(f"{entry}:0: '{entry.name}' and '{files[key]}' differ only in letter case; "
                                     f"keep one of them")
            else:
                files[key] = entry
    return folders, files


def _sentence_files(speaker_dirs: Sequence[Path]) -> dict[str, dict[str, Path]]:
    """``{SENTENCE: {"WAV": path, "PHN": path, ...}}``; accepts ``SI1027.WAV``, ``si1027.wav`` and the
    ``SI1027.WAV.wav`` RIFF copies some redistributions add beside the SPHERE file (the RIFF one is used)."""
    files: dict[str, dict[str, Path]] = {}
    for key, path in _children(speaker_dirs)[1].items():
        if key.endswith(".WAV.WAV"):
            stem, kind = key[: -len(".WAV.WAV")], "WAV.RIFF"
        else:
            stem, _, kind = key.rpartition(".")
        if _UTTERANCE.match(stem) and kind in ("WAV", "WAV.RIFF", "PHN", "WRD", "TXT"):
            files.setdefault(stem, {})[kind] = path
    return files


def scan_corpus(corpus_dir: str | os.PathLike) -> list[TimitUtterance]:
    """Every sentence with audio under ``corpus_dir/{TRAIN,TEST}/DR*/SPEAKER/``, in (part, speaker, sentence)
    order. Folder and file names may be upper, lower or mixed case, and folders differing only in case are
    merged. Sentences without audio are ignored (logged); missing ``.PHN`` files are reported by the caller
    (``phn`` is None).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise KaldiDataError(f"{corpus_dir}:0: TIMIT directory not found")
    top = _children([corpus_dir])[0]
    if not all(part in top for part in PARTS):
        raise KaldiDataError(f"{corpus_dir}:0: expected TRAIN/ and TEST/ (any letter case) in the TIMIT directory "
                             f"(LDC93S1 layout: TIMIT/TRAIN/DR1/FCJF0/SA1.WAV); found {sorted(top) or 'nothing'}")
    utterances: list[TimitUtterance] = []
    for part in PARTS:
        for dialect, dialect_dirs in _children(top[part])[0].items():
            if not _DIALECT.match(dialect):
                continue
            for speaker, speaker_dirs in _children(dialect_dirs)[0].items():
                if not SPEAKER_ID.match(speaker):
                    continue
                for sentence, kinds in sorted(_sentence_files(speaker_dirs).items()):
                    wav = kinds.get("WAV.RIFF", kinds.get("WAV"))
                    if wav is None:
                        logger.warning("%s: no audio for sentence %s (its other files are ignored)", speaker_dirs[0],
                                       sentence)
                        continue
                    utterances.append(TimitUtterance(part, dialect, speaker, sentence, wav, kinds.get("PHN"),
                                                     kinds.get("WRD"), kinds.get("TXT")))
    speakers: dict[str, TimitUtterance] = {}
    for utt in utterances:
        first = speakers.setdefault(utt.speaker, utt)
        if (first.part, first.dialect) != (utt.part, utt.dialect):
            raise KaldiDataError(f"{utt.wav.parent}:0: speaker {utt.speaker} also appears in "
                                 f"{first.wav.parent}: a speaker belongs to one part and one dialect region")
    utterances.sort(key=lambda u: (PARTS.index(u.part), u.speaker, u.sentence))
    return utterances


def read_txt(path: str | os.PathLike) -> str:
    """The sentence of a ``.TXT`` file (``START END words...``), in upper case without punctuation."""
    path = Path(path)
    with open(path, encoding="ascii", errors="replace") as f:
        line = f.readline()
    fields = line.split(maxsplit=2)
    if len(fields) < 3 or not fields[0].isdigit() or not fields[1].isdigit():
        raise KaldiDataError(f"{path}:1: expected 'START END sentence', got {line.strip()!r}")
    words = re.sub(r"[^A-Za-z0-9' -]+", " ", fields[2]).upper().split()
    return " ".join(words)


def read_speaker_list(path: str | os.PathLike) -> list[str]:
    """Speaker IDs one per line (Kaldi's ``conf/{dev,test}_spk.list`` style), upper case; blank lines skipped."""
    path = Path(path)
    speakers: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 1 or not SPEAKER_ID.match(fields[0].upper()):
                raise KaldiDataError(f"{path}:{lineno}: expected one TIMIT speaker ID (e.g. FCJF0), got {line.strip()!r}")
            speakers.append(fields[0].upper())
    return speakers


# The standard speaker sets (Kaldi egs/timit/s5/conf/test_spk.list and dev_spk.list, from the TIMIT
# documentation's core test set and the 50-speaker development set of Halberstadt's thesis, 1998).
CORE_TEST_SPEAKERS: tuple[str, ...] = (
    "MDAB0", "MWBT0", "FELC0", "MTAS1", "MWEW0", "FPAS0", "MJMP0", "MLNT0", "FPKT0", "MLLL0", "MTLS0", "FJLM0",
    "MBPM0", "MKLT0", "FNLP0", "MCMJ0", "MJDH0", "FMGD0", "MGRT0", "MNJM0", "FDHC0", "MJLN0", "MPAM0", "FMLD0",
)
DEV_SPEAKERS: tuple[str, ...] = (
    "FAKS0", "FDAC1", "FJEM0", "MGWT0", "MJAR0", "MMDB1", "MMDM2", "MPDF0", "FCMH0", "FKMS0", "MBDG0", "MBWM0",
    "MCSH0", "FADG0", "FDMS0", "FEDW0", "MGJF0", "MGLB0", "MRTK0", "MTAA0", "MTDT0", "MTHC0", "MWJG0", "FNMR0",
    "FREW0", "FSEM0", "MBNS0", "MMJR0", "MDLS0", "MDLF0", "MDVC0", "MERS0", "FMAH0", "FDRW0", "MRCS0", "MRJM4",
    "FCAL1", "MMWH0", "FJSJ0", "MAJC0", "MJSW0", "MREB0", "FGJD0", "FJMG0", "MROA0", "MTEB0", "MJFC0", "MRJR0",
    "FMML0", "MRWS1",
)
