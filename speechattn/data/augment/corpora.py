"""Readers for the two augmentation corpora of Kaldi/WeSpeaker/SpeechBrain recipes, in their layouts.

**MUSAN** (openslr.org/17, ``--musan-dir``)::

    musan/
      music/<collection>/*.wav + ANNOTATIONS    e.g. music/fma/music-fma-0000.wav
      noise/<collection>/*.wav + ANNOTATIONS    e.g. noise/free-sound/noise-free-sound-0000.wav
      speech/<collection>/*.wav + ANNOTATIONS   e.g. speech/librivox/speech-librivox-0000.wav

Music ``ANNOTATIONS`` lines are ``UTT GENRES VOCALS ARTIST...`` with VOCALS ``Y``/``N`` (Kaldi's
``steps/data/make_musan.py`` and lhotse read the first four fields; ``use_vocals=False`` drops music with
vocals, as Kaldi's ``--use-vocals false`` does). Files are found recursively, as Kaldi (``os.walk``) and
lhotse (``rglob("*.wav")``) do; a part's files are its noise pool (MUSAN speech is the babble source).

**RIRS_NOISES** (openslr.org/28, ``--rir-dir``)::

    RIRS_NOISES/
      simulated_rirs/{smallroom,mediumroom,largeroom}/rir_list + RoomNNN/RoomNNN-MMMMM.wav
      real_rirs_isotropic_noises/rir_list, noise_list, *.wav
      pointsource_noises/noise_list, *.wav

``rir_list`` lines are Kaldi's (``steps/data/reverberate_data_dir.py``): ``--rir-id ID --room-id ROOM
[--receiver-position-id X] [--source-position-id X] [--rt60 S] [--drr DB] [--probability P] FILE``;
``noise_list`` lines ``--noise-id ID --noise-type {isotropic,point-source} [--bg-fg-type T] [--rir-id ID]
[--room-linkage ROOM] [--probability P] FILE``. FILE is written relative to the directory *containing*
``RIRS_NOISES`` (``RIRS_NOISES/simulated_rirs/...``); it is looked for under the list's directory and its
parents, dropping leading components when the corpus was unpacked under another name; absolute paths
are kept. The synthetic RIR set of
:mod:`speechattn.data.augment.rir` is written in this same layout, so one reader serves both.

Bad input raises :class:`~speechattn.data.kaldi_dir.KaldiDataError` naming the directory, or the list
file and line.

Example:
    >>> parse_kaldi_options("--rir-id r1 --room-id room1 --rt60 0.4 RIRS_NOISES/x.wav".split())
    ({'rir-id': 'r1', 'room-id': 'room1', 'rt60': '0.4'}, 'RIRS_NOISES/x.wav')
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

from speechattn.data.augment.sources import NoiseFile
from speechattn.data.kaldi_dir import KaldiDataError

log = logging.getLogger(__name__)

__all__ = [
    "MUSAN_PARTS",
    "SIMULATED_ROOMS",
    "read_musan",
    "parse_kaldi_options",
    "RirEntry",
    "read_rir_list",
    "read_noise_list",
    "find_rir_lists",
    "read_rirs_noises",
]

MUSAN_PARTS = ("music", "noise", "speech")
SIMULATED_ROOMS = ("smallroom", "mediumroom", "largeroom")
RIR_OPTIONS = {"rir-id", "room-id", "receiver-position-id", "source-position-id", "rt60", "drr", "probability"}
NOISE_OPTIONS = {"noise-id", "noise-type", "bg-fg-type", "rir-id", "room-linkage", "probability"}


def _noise_file(path: Path, utt: str, where: str) -> NoiseFile:
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise KaldiDataError(f"{where}: {path}: cannot read audio header: {e}") from e
    return NoiseFile(utt, path, int(info.frames), int(info.samplerate), where)


def _read_music_vocals(path: Path) -> dict[str, bool]:
    vocals: dict[str, bool] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or fields[2] not in ("Y", "N"):
            raise KaldiDataError(f"{path}:{lineno}: expected 'UTT GENRES VOCALS(Y/N) ARTIST...', got {line.strip()!r}")
        vocals[fields[0]] = fields[2] == "Y"
    return vocals


def read_musan(musan_dir: str | os.PathLike, parts: Sequence[str] = MUSAN_PARTS,
               use_vocals: bool = True) -> dict[str, list[NoiseFile]]:
    """MUSAN's files by part: ``{"music": [...], "noise": [...], "speech": [...]}`` (only ``parts``).

    Raises KaldiDataError when ``musan_dir`` is not a directory, a requested part is missing or holds
    no ``*.wav``, a music ``ANNOTATIONS`` line is malformed, or (``use_vocals=False``) a music file has
    no annotation to tell whether it has vocals.
    """
    root = Path(musan_dir)
    unknown = [p for p in parts if p not in MUSAN_PARTS]
    if unknown:
        raise ValueError(f"unknown MUSAN parts {unknown}; choose from {list(MUSAN_PARTS)}")
    if not root.is_dir():
        raise KaldiDataError(f"{root}: MUSAN directory not found (expected music/, noise/, speech/ from "
                             f"openslr.org/17)")
    missing = [p for p in parts if not (root / p).is_dir()]
    if missing:
        present = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise KaldiDataError(f"{root}: not a MUSAN directory: no {', '.join(p + '/' for p in missing)} "
                             f"(it has {present or 'no subdirectories'}; expected music/, noise/, speech/ each "
                             f"with <collection>/*.wav and ANNOTATIONS)")
    result: dict[str, list[NoiseFile]] = {}
    for part in parts:
        wavs = sorted((root / part).rglob("*.wav"))
        if not wavs:
            raise KaldiDataError(f"{root / part}: no *.wav files (expected {part}/<collection>/*.wav)")
        annotations = sorted((root / part).rglob("ANNOTATIONS"))
        if not annotations:
            log.warning("%s: no ANNOTATIONS file (MUSAN has one per collection)", root / part)
        keep = wavs
        if part == "music" and not use_vocals:
            vocals: dict[str, bool] = {}
            for path in annotations:
                vocals.update(_read_music_vocals(path))
            unannotated = [w for w in wavs if w.stem not in vocals]
            if unannotated:
                raise KaldiDataError(f"{unannotated[0]}: music file without an ANNOTATIONS line (needed to leave "
                                     f"out music with vocals, use_vocals=false; {len(unannotated)} such files)")
            keep = [w for w in wavs if not vocals[w.stem]]
            log.info("MUSAN music: %d of %d files without vocals", len(keep), len(wavs))
            if not keep:
                raise KaldiDataError(f"{root / part}: every music file has vocals (use_vocals=false)")
        result[part] = [_noise_file(w, w.stem, str(w.relative_to(root))) for w in keep]
        log.info("MUSAN %s: %d files, %.1f h", part, len(result[part]),
                 sum(f.num_samples / f.sample_rate for f in result[part]) / 3600)
    return result


def parse_kaldi_options(tokens: Sequence[str]) -> tuple[dict[str, str], str]:
    """``--key value ... FILE`` -> ``({key: value}, FILE)``; ValueError for anything else."""
    if not tokens:
        raise ValueError("empty line")
    options: dict[str, str] = {}
    i = 0
    while i < len(tokens) - 1:
        key = tokens[i]
        if not key.startswith("--") or len(key) == 2:
            raise ValueError(f"expected an option '--name value' before the file, got {key!r}")
        options[key[2:]] = tokens[i + 1]
        i += 2
    if i != len(tokens) - 1 or tokens[-1].startswith("--"):
        raise ValueError("expected the file name last, after '--name value' options")
    return options, tokens[-1]


def _resolve(file: str, list_path: Path) -> Path | None:
    """The file a list line names, or None. Lists write ``RIRS_NOISES/simulated_rirs/...``, relative to
    the directory holding the corpus; the corpus may have been unpacked under another name, so leading
    components are dropped one by one and each tail is looked for under the list's ancestors."""
    path = Path(file)
    if path.is_absolute():
        return path if path.is_file() else None
    ancestors = list(list_path.parent.parents)[:4]
    ancestors.insert(0, list_path.parent)
    for k in range(len(path.parts)):
        tail = Path(*path.parts[k:])
        for base in ancestors:
            if (base / tail).is_file():
                return base / tail
    return None


@dataclass(frozen=True)
class RirEntry:
    """One impulse response of a ``rir_list``; ``rt60`` (s) and ``probability`` when the list gives them."""

    rir_id: str
    room_id: str
    path: Path
    rt60: float | None = None
    probability: float | None = None
    where: str = ""  # "rir_list:line"


def _float_option(options: dict[str, str], key: str, where: str) -> float | None:
    if key not in options:
        return None
    try:
        value = float(options[key])
    except ValueError:
        raise KaldiDataError(f"{where}: --{key} must be a number, got {options[key]!r}") from None
    if not value >= 0:
        raise KaldiDataError(f"{where}: --{key} must be >= 0, got {options[key]!r}")
    return value


def _read_option_lines(path: Path, allowed: set[str], required: Iterable[str]) -> Iterable[tuple[str, dict, Path]]:
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: list not found")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{lineno}"
        try:
            options, file = parse_kaldi_options(tokens)
        except ValueError as e:
            raise KaldiDataError(f"{where}: {e}: {line.strip()!r}") from None
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise KaldiDataError(f"{where}: unknown option --{unknown[0]} (known: {sorted(allowed)})")
        for key in required:
            if key not in options:
                raise KaldiDataError(f"{where}: --{key} is required: {line.strip()!r}")
        resolved = _resolve(file, path)
        if resolved is None:
            raise KaldiDataError(f"{where}: file {file!r} not found (relative to {path.parent} or its parents)")
        yield where, options, resolved


def read_rir_list(path: str | os.PathLike) -> list[RirEntry]:
    """Entries of a Kaldi ``rir_list`` (format in the module docstring); every file must exist."""
    entries = []
    for where, options, resolved in _read_option_lines(Path(path), RIR_OPTIONS, ("rir-id", "room-id")):
        entries.append(RirEntry(options["rir-id"], options["room-id"], resolved,
                                _float_option(options, "rt60", where), _float_option(options, "probability", where),
                                where))
    if not entries:
        raise KaldiDataError(f"{path}:0: empty rir_list")
    return entries


def read_noise_list(path: str | os.PathLike, noise_type: str | None = "point-source") -> list[NoiseFile]:
    """Noise files of a Kaldi ``noise_list`` (only ``noise_type`` ones unless None)."""
    files = []
    for where, options, resolved in _read_option_lines(Path(path), NOISE_OPTIONS, ("noise-id", "noise-type")):
        if options["noise-type"] not in ("isotropic", "point-source"):
            raise KaldiDataError(f"{where}: --noise-type must be isotropic or point-source, "
                                 f"got {options['noise-type']!r}")
        if noise_type is None or options["noise-type"] == noise_type:
            files.append(_noise_file(resolved, options["noise-id"], where))
    return files


def find_rir_lists(rir_dir: str | os.PathLike, rooms: Sequence[str] = SIMULATED_ROOMS,
                   real: bool = False) -> list[Path]:
    """The ``rir_list`` files of a RIRS_NOISES-layout directory: ``simulated_rirs/<room>/rir_list`` for
    each of ``rooms`` present (at least one must be), plus ``real_rirs_isotropic_noises/rir_list`` when
    ``real``. KaldiDataError when the layout is not there."""
    root = Path(rir_dir)
    if not root.is_dir():
        raise KaldiDataError(f"{root}: RIR directory not found (expected RIRS_NOISES from openslr.org/28 or a "
                             f"set made by local/make_rir_set.py)")
    unknown = [r for r in rooms if r not in SIMULATED_ROOMS]
    if unknown:
        raise ValueError(f"unknown room sizes {unknown}; choose from {list(SIMULATED_ROOMS)}")
    lists = [root / "simulated_rirs" / room / "rir_list" for room in rooms]
    lists = [p for p in lists if p.is_file()]
    if not lists:
        raise KaldiDataError(f"{root}: no simulated_rirs/{{{','.join(rooms)}}}/rir_list (not a RIRS_NOISES "
                             f"layout: expected simulated_rirs/<room>/rir_list + RoomNNN/*.wav)")
    if real:
        real_list = root / "real_rirs_isotropic_noises" / "rir_list"
        if not real_list.is_file():
            raise KaldiDataError(f"{real_list}:0: not found (real RIRs requested)")
        lists.append(real_list)
    return lists


def read_rirs_noises(rir_dir: str | os.PathLike, rooms: Sequence[str] = SIMULATED_ROOMS,
                     real: bool = False) -> list[RirEntry]:
    """Every RIR of :func:`find_rir_lists`' lists."""
    entries = [e for path in find_rir_lists(rir_dir, rooms, real) for e in read_rir_list(path)]
    log.info("%s: %d RIRs from %d rooms (%s%s)", rir_dir, len(entries), len({e.room_id for e in entries}),
             ", ".join(rooms), ", real" if real else "")
    return entries
