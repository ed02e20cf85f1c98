"""Kaldi data directories: read, write, validate and split the text tables (`wav.scp`, `utt2spk`, ...).

A Kaldi table is a text file with one ``KEY VALUE...`` entry per line, keys unique and sorted in C-locale
byte order (what ``LC_ALL=C sort`` produces). Every error about a table names the file and the line, as
``"{path}:{lineno}: what is wrong"``, so a user can open the file at the right place.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_table(d / "utt2spk", {"spk1-utt2": "spk1", "spk1-utt1": "spk1"})
    >>> read_table(d / "utt2spk")
    {'spk1-utt1': 'spk1', 'spk1-utt2': 'spk1'}
    >>> utt2spk_to_spk2utt(read_table(d / "utt2spk"))
    {'spk1': ['spk1-utt1', 'spk1-utt2']}
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from speechattn.utils.atomic import atomic_open

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Tables keyed by utterance (or by recording, for wav.scp when `segments` exists), by speaker.
UTT_TABLES = ("utt2spk", "text", "frame_labels", "utt2num_frames", "utt2dur", "feats.scp", "segments",
              "utt2lang", "utt2uniq", "utt2speed")
SPK_TABLES = ("spk2gender", "spk2age", "cmvn_spk.scp", "cmvn.scp")
RECORDING_TABLES = ("reco2file_and_channel", "reco2dur")


class KaldiDataError(ValueError):
    """Bad Kaldi table or data directory; the message starts with ``"{path}:{lineno}: "``."""


def _c_locale_key(key: str) -> bytes:
    """Sort key of ``LC_ALL=C sort``: raw byte order of the UTF-8 encoding."""
    return key.encode("utf-8")


_BOM = "\ufeff"


def read_text_lines(path: PathLike, what: str = "table file") -> Iterator[tuple[int, str]]:
    """``(lineno, line)`` of a UTF-8 text file, lines without their end-of-line characters.

    Raises :class:`KaldiDataError` naming file and line for a missing file (``what`` says which kind), a
    line that is not valid UTF-8 (with the offending byte and its column) and a UTF-8 byte-order mark at
    the start (Windows editors add one; Kaldi would read it as part of the first key).
    """
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: {what} not found" if not path.exists() else f"{path}:0: not a regular file")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise KaldiDataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    f"convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
            if lineno == 1 and line.startswith(_BOM):
                raise KaldiDataError(f"{path}:1: starts with a UTF-8 byte-order mark (BOM, bytes ef bb bf); "
                                     f"remove it, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}")
            yield lineno, line.rstrip("\r\n")


def read_fields(path: PathLike, count: int, expected: str, what: str = "table file"
                ) -> Iterator[tuple[int, list[str]]]:
    """``(lineno, fields)`` of each non-blank line of a whitespace-separated list with ``count`` fields per
    line (trial lists, split lists, score maps), read by :func:`read_text_lines`; a line with another number
    of fields is an error naming file and line: ``expected {expected}, got N fields: 'LINE'``."""
    for lineno, line in read_text_lines(path, what):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != count:
            raise KaldiDataError(f"{path}:{lineno}: expected {expected}, got {len(fields)} fields: {line.strip()!r}")
        yield lineno, fields


def _read_entries(path: PathLike, *, check_sorted: bool = True,
                  min_fields: int = 2) -> dict[str, tuple[str, int]]:
    """Read a table into ``{key: (value, lineno)}``; see :func:`read_table` for the checks."""
    path = Path(path)
    entries: dict[str, tuple[str, int]] = {}
    previous_key: bytes | None = None
    for lineno, line in read_text_lines(path):
        fields = line.split(maxsplit=1)
        if not fields:
            raise KaldiDataError(f"{path}:{lineno}: empty line")
        key = fields[0]
        value = fields[1].strip() if len(fields) > 1 else ""
        num_fields = 1 + len(value.split()) if value else 1
        if num_fields < min_fields:
            what = "missing value" if not value else f"expected at least {min_fields} fields, got {num_fields}"
            raise KaldiDataError(f"{path}:{lineno}: {what} for key '{key}'")
        if key in entries:
            raise KaldiDataError(
                f"{path}:{lineno}: duplicated key '{key}' (first on line {entries[key][1]})")
        sort_key = _c_locale_key(key)
        if check_sorted and previous_key is not None and sort_key < previous_key:
            raise KaldiDataError(
                f"{path}:{lineno}: key '{key}' is not sorted (it comes before the key on line "
                f"{lineno - 1} in C-locale order); fix with: LC_ALL=C sort -k1,1 {path}")
        previous_key = sort_key
        entries[key] = (value, lineno)
    return entries


def read_table(path: PathLike, *, check_sorted: bool = True, min_fields: int = 2) -> dict[str, str]:
    """Read a Kaldi table ``KEY VALUE...`` into an insertion-ordered ``{key: value}``.

    The value is the rest of the line, whitespace-stripped (fields may be separated by tabs or spaces).
    Raises :class:`KaldiDataError` naming file and line for: a missing file, an empty line, fewer than
    ``min_fields`` fields (``min_fields=1`` allows a key without value), a duplicated key, and (when
    ``check_sorted``) a key out of C-locale byte order.
    """
    return {key: value for key, (value, _) in
            _read_entries(path, check_sorted=check_sorted, min_fields=min_fields).items()}


def read_table_entries(path: PathLike, *, check_sorted: bool = True,
                       min_fields: int = 2) -> dict[str, tuple[str, int]]:
    """Like :func:`read_table`, with each value's line number: ``{key: (value, lineno)}`` (for errors that
    name the line of an entry found wrong later)."""
    return _read_entries(path, check_sorted=check_sorted, min_fields=min_fields)


def read_table_lists(path: PathLike, *, check_sorted: bool = True,
                     min_fields: int = 2) -> dict[str, list[str]]:
    """Like :func:`read_table` with the value split on whitespace (for spk2utt, frame_labels, text)."""
    return {key: value.split() for key, value in
            read_table(path, check_sorted=check_sorted, min_fields=min_fields).items()}


def write_table(path: PathLike, mapping: Mapping[str, str | Sequence[str]], *, sort: bool = True) -> None:
    """Write ``mapping`` as a Kaldi table atomically; list values are joined with spaces.

    With ``sort`` the keys are written in C-locale byte order, which is what the readers check.
    """
    path = Path(path)
    keys: Iterable[str] = sorted(mapping, key=_c_locale_key) if sort else mapping
    with atomic_open(path, "w") as f:
        for key in keys:
            if not key or any(c.isspace() for c in key):
                raise KaldiDataError(f"{path}:0: invalid key {key!r} (empty or contains whitespace)")
            value = mapping[key]
            text = value if isinstance(value, str) else " ".join(value)
            if "\n" in text:
                raise KaldiDataError(f"{path}:0: value of key '{key}' contains a newline")
            f.write(f"{key} {text}\n" if text else f"{key}\n")


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert utt2spk; utterances keep their utt2spk order, speakers are sorted (C-locale)."""
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in utt2spk.items():
        spk2utt.setdefault(spk, []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt, key=_c_locale_key)}


@dataclass
class KaldiDataDir:
    """The tables of a Kaldi data directory, loaded and checked for format errors.

    ``spk2utt`` is derived from ``utt2spk`` when the file is absent; absent optional tables are ``None``
    (``utt2spk``/``spk2utt`` are empty dicts when there is no utt2spk). ``segments`` maps an utterance to
    ``(recording_id, start_seconds, end_seconds)``. ``utt2speed`` (speechattn's, not Kaldi's) holds the
    speed factor applied when an utterance's audio is read (written by ``data.speed_perturb``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_table(d / "wav.scp", {"u1": "/data/u1.flac"})
        >>> write_table(d / "utt2spk", {"u1": "s1"})
        >>> data = KaldiDataDir.load(d)
        >>> data.utterances, data.spk2utt
        (['u1'], {'s1': ['u1']})
    """

    path: Path
    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]]
    text: dict[str, str] | None = None
    segments: dict[str, tuple[str, float, float]] | None = None
    utt2num_frames: dict[str, int] | None = None
    utt2speed: dict[str, float] | None = None

    @classmethod
    def load(cls, path: PathLike, require: Sequence[str] = ("wav.scp",)) -> "KaldiDataDir":
        """Load the tables of ``path``; every name in ``require`` must exist (KaldiDataError if not)."""
        path = Path(path)
        if not path.is_dir():
            raise KaldiDataError(f"{path}:0: data directory not found")
        for name in require:
            if not (path / name).is_file():
                raise KaldiDataError(f"{path / name}:0: required file missing from data directory")

        def optional(name: str) -> dict[str, str] | None:
            return read_table(path / name) if (path / name).is_file() else None

        wav_scp = optional("wav.scp") or {}
        utt2spk = optional("utt2spk") or {}
        spk2utt = (read_table_lists(path / "spk2utt") if (path / "spk2utt").is_file()
                   else utt2spk_to_spk2utt(utt2spk))
        text = read_table(path / "text", min_fields=1) if (path / "text").is_file() else None
        segments = _read_segments(path / "segments") if (path / "segments").is_file() else None
        utt2num_frames = (_read_int_table(path / "utt2num_frames")
                          if (path / "utt2num_frames").is_file() else None)
        utt2speed = _read_speed_table(path / "utt2speed") if (path / "utt2speed").is_file() else None
        data = cls(path, wav_scp, utt2spk, spk2utt, text, segments, utt2num_frames, utt2speed)
        if segments is not None:
            data.check_recordings()
        if utt2spk:
            data.check_speakers()
        return data

    def check_recordings(self) -> None:
        """Every segment's recording is in ``wav.scp`` (KaldiDataError naming the segment's line if not)."""
        for lineno, (utt, (recording, _, _)) in enumerate((self.segments or {}).items(), start=1):
            if recording not in self.wav_scp:
                raise KaldiDataError(f"{self.path / 'segments'}:{lineno}: recording '{recording}' of segment "
                                     f"'{utt}' is not in {self.path / 'wav.scp'}")

    def check_speakers(self) -> None:
        """Every utterance has a speaker in ``utt2spk`` (KaldiDataError naming the utterance's line if not)."""
        utterances = self.utterances
        missing = [utt for utt in utterances if utt not in self.utt2spk]
        if missing:
            source = self.path / ("segments" if self.segments is not None else "wav.scp")
            lineno = utterances.index(missing[0]) + 1  # tables have one entry per line (no blank lines)
            raise KaldiDataError(f"{source}:{lineno}: utterance '{missing[0]}' has no speaker in "
                                 f"{self.path / 'utt2spk'} ({len(missing)} of {len(utterances)} utterances have "
                                 f"none; every utterance needs one, Kaldi's utils/fix_data_dir.sh drops them)")

    @property
    def utterances(self) -> list[str]:
        """Utterance IDs: keys of ``segments`` if present, else of ``wav.scp``."""
        return list(self.segments if self.segments is not None else self.wav_scp)


def _read_segments(path: Path) -> dict[str, tuple[str, float, float]]:
    segments: dict[str, tuple[str, float, float]] = {}
    for utt, (value, lineno) in _read_entries(path, min_fields=4).items():
        fields = value.split()
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise KaldiDataError(f"{path}:{lineno}: start/end times must be numbers: '{value}'") from None
        if len(fields) != 3 or start < 0 or (end != -1 and end <= start):
            raise KaldiDataError(f"{path}:{lineno}: expected 'UTT RECORDING START END' with "
                                 f"0 <= START < END (or END = -1), got '{utt} {value}'")
        segments[utt] = (fields[0], start, end)
    return segments


def _read_number_table(path: Path, convert: Callable[[str], float], valid: Callable[[float], bool],
                       expected: str) -> dict[str, Any]:
    """``{key: convert(value)}``; a value that does not convert or is not ``valid`` is an error naming
    the line and what was ``expected``."""
    result: dict[str, Any] = {}
    for key, (value, lineno) in _read_entries(path).items():
        try:
            number = convert(value)
        except ValueError:
            number = None
        if number is None or not valid(number):
            raise KaldiDataError(f"{path}:{lineno}: expected {expected} for '{key}', got '{value}'")
        result[key] = number
    return result


def _read_int_table(path: Path) -> dict[str, int]:
    return _read_number_table(path, int, lambda n: n >= 0, "a count >= 0")


def _read_speed_table(path: Path) -> dict[str, float]:
    return _read_number_table(path, float, lambda f: f > 0.0, "a speed factor > 0")  # NaN fails too


def _is_pipe(value: str) -> bool:
    return value.rstrip().endswith("|")


def _check_keys(name: Path, entries: Mapping[str, tuple[str, int]], reference_name: Path,
                reference: Mapping[str, tuple[str, int]], *, must_equal: bool) -> None:
    """Keys of ``entries`` must be a subset of (or equal to) the keys of ``reference``."""
    for key, (_, lineno) in entries.items():
        if key not in reference:
            raise KaldiDataError(f"{name}:{lineno}: utterance '{key}' is not in {reference_name}")
    if must_equal:
        for key, (_, lineno) in reference.items():
            if key not in entries:
                raise KaldiDataError(f"{reference_name}:{lineno}: utterance '{key}' is missing from {name}")


def validate_data_dir(path: PathLike, *, require_labels: str | None = None, check_audio: bool = True) -> None:
    """Check a data directory like Kaldi's ``utils/validate_data_dir.sh``; raise KaldiDataError if bad.

    Checks: wav.scp exists; every table is sorted without duplicates; utt2spk and spk2utt agree; every
    utterance (key of ``segments`` if present, else of ``wav.scp``) has a speaker in utt2spk and vice
    versa; keys of text / frame_labels / utt2num_frames / feats.scp are a subset of the utterances, and
    equal to them for ``require_labels`` (a file name such as ``"frame_labels"``, which must exist); the
    number of frame labels equals utt2num_frames where both exist; segments name recordings of wav.scp;
    with ``check_audio``, audio files in wav.scp exist (shell pipes ``cmd |`` are not checked).
    """
    path = Path(path)
    if not path.is_dir():
        raise KaldiDataError(f"{path}:0: data directory not found")
    wav_path = path / "wav.scp"
    wav = _read_entries(wav_path)
    if not wav:
        raise KaldiDataError(f"{wav_path}:0: wav.scp is empty")

    segments_path = path / "segments"
    if segments_path.is_file():
        seg = _read_segments(segments_path)
        seg_lines = _read_entries(segments_path, min_fields=4)
        for utt, (recording, _, _) in seg.items():
            if recording not in wav:
                raise KaldiDataError(f"{segments_path}:{seg_lines[utt][1]}: recording '{recording}' of "
                                     f"utterance '{utt}' is not in {wav_path}")
        utts, utts_path = seg_lines, segments_path
    else:
        utts, utts_path = wav, wav_path

    utt2spk_path, spk2utt_path = path / "utt2spk", path / "spk2utt"
    if utt2spk_path.is_file():
        utt2spk = _read_entries(utt2spk_path)
        for utt, (spk, lineno) in utt2spk.items():
            if len(spk.split()) != 1:
                raise KaldiDataError(f"{utt2spk_path}:{lineno}: expected one speaker for '{utt}', got '{spk}'")
        for utt, (_, lineno) in utts.items():
            if utt not in utt2spk:
                raise KaldiDataError(f"{utts_path}:{lineno}: utterance '{utt}' has no speaker in {utt2spk_path}")
        for utt, (_, lineno) in utt2spk.items():
            if utt not in utts:
                raise KaldiDataError(f"{utt2spk_path}:{lineno}: utterance '{utt}' is not in {utts_path}")
        if not spk2utt_path.is_file():
            raise KaldiDataError(f"{spk2utt_path}:0: missing (create it from utt2spk: "
                                 f"utils/utt2spk_to_spk2utt.pl or kaldi_dir.utt2spk_to_spk2utt)")
        _check_spk2utt(spk2utt_path, _read_entries(spk2utt_path),
                       {utt: spk for utt, (spk, _) in utt2spk.items()}, utt2spk_path)
    elif spk2utt_path.is_file():
        raise KaldiDataError(f"{utt2spk_path}:0: missing while spk2utt exists")

    if require_labels is not None and not (path / require_labels).is_file():
        raise KaldiDataError(f"{path / require_labels}:0: required label file missing")
    keyed = {}
    for name in ("text", "frame_labels", "utt2num_frames", "feats.scp", "utt2dur", "utt2speed"):
        table_path = path / name
        if table_path.is_file():
            keyed[name] = _read_entries(table_path, min_fields=1 if name == "text" else 2)
            _check_keys(table_path, keyed[name], utts_path, utts, must_equal=(name == require_labels))
    if require_labels is not None and require_labels not in keyed:
        # A label file we do not know the key semantics of: still keyed by utterance.
        table_path = path / require_labels
        _check_keys(table_path, _read_entries(table_path), utts_path, utts, must_equal=True)

    if "frame_labels" in keyed and "utt2num_frames" in keyed:
        num_frames = keyed["utt2num_frames"]
        for utt, (labels, lineno) in keyed["frame_labels"].items():
            if utt in num_frames:
                count, expected = len(labels.split()), num_frames[utt][0]
                if str(count) != expected.strip():
                    raise KaldiDataError(f"{path / 'frame_labels'}:{lineno}: utterance '{utt}' has {count} "
                                         f"frame labels but utt2num_frames says {expected}")

    if check_audio:
        for key, (value, lineno) in wav.items():
            if _is_pipe(value):
                continue
            audio_path = Path(value)
            if not audio_path.is_file():
                raise KaldiDataError(f"{wav_path}:{lineno}: audio file of '{key}' not found: {value}")


def _check_spk2utt(spk2utt_path: Path, spk2utt: Mapping[str, tuple[str, int]], utt2spk: Mapping[str, str],
                   utt2spk_path: Path) -> None:
    seen: set[str] = set()
    for spk, (utts, lineno) in spk2utt.items():
        for utt in utts.split():
            if utt2spk.get(utt) != spk:
                raise KaldiDataError(f"{spk2utt_path}:{lineno}: utterance '{utt}' of speaker '{spk}' "
                                     f"disagrees with {utt2spk_path} (speaker there: {utt2spk.get(utt)})")
            if utt in seen:
                raise KaldiDataError(f"{spk2utt_path}:{lineno}: utterance '{utt}' listed twice")
            seen.add(utt)
    for utt, spk in utt2spk.items():
        if utt not in seen:
            raise KaldiDataError(f"{spk2utt_path}:0: utterance '{utt}' (speaker '{spk}' in {utt2spk_path}) "
                                 f"is missing from spk2utt")


def _split_evenly(items: Sequence[str], nj: int) -> list[list[str]]:
    """Contiguous chunks, sizes differ by at most one, larger ones first (like Kaldi's split_scp.pl)."""
    base, extra = divmod(len(items), nj)
    chunks, start = [], 0
    for job in range(nj):
        size = base + (1 if job < extra else 0)
        chunks.append(list(items[start:start + size]))
        start += size
    return chunks


def _split_is_up_to_date(path: Path, split_root: Path, nj: int, sources: Sequence[str],
                         written: Sequence[str]) -> bool:
    """Every file a split writes (``written``) exists in every job and is newer than every source table
    (an interrupted split misses some, and is redone)."""
    newest_source = max((path / name).stat().st_mtime_ns for name in sources)
    for job in range(1, nj + 1):
        for name in written:
            target = split_root / str(job) / name
            if not target.is_file() or target.stat().st_mtime_ns < newest_source:
                return False
    return True


def split_data_dir(path: PathLike, nj: int) -> list[Path]:
    """Split a data directory into ``nj`` parts by utterance, like ``utils/split_data.sh --per-utt``.

    Writes ``path/split{nj}/{1..nj}/`` with the per-job subset of every known table (utterance-keyed
    tables, wav.scp, speaker-keyed tables such as spk2gender, and spk2utt rebuilt from the subset). Jobs
    are contiguous runs of sorted utterances with sizes differing by at most one. Idempotent: when every
    split file is newer than its source table, the existing split is reused.

    Returns the ``nj`` job directories in order.
    """
    path = Path(path)
    if nj < 1:
        raise KaldiDataError(f"{path}:0: number of jobs must be >= 1, got {nj}")
    data = KaldiDataDir.load(path)
    utterances = data.utterances
    if nj > len(utterances):
        raise KaldiDataError(f"{path}:0: cannot split {len(utterances)} utterances into {nj} jobs")
    has_segments = data.segments is not None
    sources = [name for name in ("wav.scp", "spk2utt") + UTT_TABLES + SPK_TABLES + RECORDING_TABLES
               if (path / name).is_file()]
    split_root = path / f"split{nj}"
    job_dirs = [split_root / str(job) for job in range(1, nj + 1)]
    written = sources + ["spk2utt"] if data.utt2spk and "spk2utt" not in sources else sources  # derived spk2utt too
    if split_root.is_dir() and _split_is_up_to_date(path, split_root, nj, sources, written):
        logger.info("%s: split into %d jobs is up to date, reusing it", split_root, nj)
        return job_dirs

    tables = {name: read_table(path / name, min_fields=1) for name in sources if name != "spk2utt"}
    for job_dir, job_utts in zip(job_dirs, _split_evenly(utterances, nj)):
        utt_set = set(job_utts)
        speakers = {data.utt2spk[utt] for utt in job_utts if utt in data.utt2spk}
        recordings = {data.segments[utt][0] for utt in job_utts} if has_segments else utt_set
        for name, table in tables.items():
            if name in SPK_TABLES:
                keep = speakers
            elif name in RECORDING_TABLES or (name == "wav.scp" and has_segments):
                keep = recordings
            else:
                keep = utt_set
            write_table(job_dir / name, {k: v for k, v in table.items() if k in keep})
        if data.utt2spk:
            subset = {utt: data.utt2spk[utt] for utt in job_utts}
            write_table(job_dir / "spk2utt", utt2spk_to_spk2utt(subset))
        for stale in set(("wav.scp", "spk2utt") + UTT_TABLES + SPK_TABLES + RECORDING_TABLES) - set(sources):
            if stale != "spk2utt" or not data.utt2spk:
                (job_dir / stale).unlink(missing_ok=True)
    logger.info("%s: split %d utterances into %d jobs", split_root, len(utterances), nj)
    return job_dirs
