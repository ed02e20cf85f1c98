"""Kaldi ark/scp matrices and vectors (features, CMVN statistics, embeddings) read without running commands.

Kaldi's "rxspecifiers" (the values of ``feats.scp``, ``cmvn.scp``, ``embeddings.scp``...) can be commands:
``copy-feats ark:x.ark ark:- |`` runs a shell, and so do ``cmd |:123`` (an offset into a command's output),
``cmd |[0:10]`` and ``| cmd``; ``-`` reads standard input. kaldiio executes all of them. Every read of an
scp/ark in speechattn goes through this module, which refuses them unless the caller passes
``allow_pipes=True`` (the ``allow_pipes=true`` option of the entry points), before anything is run. Errors
name the scp file and line (``"{scp}:{line}: ..."``, :class:`~speechattn.data.kaldi_dir.KaldiDataError`).

Example:
    >>> is_command("raw_fbank.1.ark:42"), is_command("copy-feats ark:a.ark ark:- |"), is_command("cmd |:42")
    (False, True, True)
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from speechattn.data.kaldi_dir import KaldiDataError, read_table_entries

PathLike = str | os.PathLike

# An rxspecifier is FILE, FILE:OFFSET or FILE:OFFSET[RANGES] (kaldiio's extended filenames); what is left
# once the optional suffixes are removed decides whether a command would run.
_SUFFIX = re.compile(r"(\[[0-9:, ]*\])?$")
_OFFSET = re.compile(r":\d+$")


def _file_part(rxspecifier: str) -> str:
    text = rxspecifier.strip()
    text = _SUFFIX.sub("", text, count=1).rstrip()
    return _OFFSET.sub("", text, count=1).strip()


def is_command(rxspecifier: str) -> bool:
    """True when reading ``rxspecifier`` would run a shell command or read stdin (``cmd |``, ``| cmd``,
    ``cmd |:OFFSET``, ``cmd |[RANGES]``, ``-``), as kaldiio and Kaldi interpret it."""
    stripped = rxspecifier.strip()
    file_part = _file_part(rxspecifier)
    return (stripped.endswith("|") or stripped.startswith("|") or file_part.endswith("|")
            or file_part.startswith("|") or file_part == "-" or stripped == "-")


def check_rxspecifier(rxspecifier: str, where: str, *, allow_pipes: bool = False) -> None:
    """Raise :class:`KaldiDataError` (``"{where}: ..."``) if ``rxspecifier`` is a command and pipes are not
    allowed. ``where`` is the scp's ``"file:line"`` (or the config option) the value came from."""
    if allow_pipes or not is_command(rxspecifier):
        return
    shown = rxspecifier if len(rxspecifier) <= 120 else rxspecifier[:117] + "..."
    raise KaldiDataError(f"{where}: refusing to run the command in '{shown}' (shell pipes and stdin are only "
                         f"read with allow_pipes=true); write the data to an ark file instead")


class MatrixReader:
    """Reads matrices/vectors by rxspecifier, keeping ark files open across reads (one open per ark).

    Use as a context manager; ``read(rxspecifier, where)`` returns a float ndarray ``(T, D)`` or ``(D,)``.
    Commands are refused unless ``allow_pipes``; a missing ark, an offset past its end or corrupt data is a
    :class:`KaldiDataError` naming ``where``.
    """

    def __init__(self, *, allow_pipes: bool = False) -> None:
        self.allow_pipes = allow_pipes
        self._files: dict[str, IO[bytes]] = {}

    def __enter__(self) -> "MatrixReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._files.clear()

    def read(self, rxspecifier: str, where: str) -> np.ndarray:
        import kaldiio

        check_rxspecifier(rxspecifier, where, allow_pipes=self.allow_pipes)
        command = is_command(rxspecifier)
        if not command:
            ark = _file_part(rxspecifier)
            if not Path(ark).is_file():
                raise KaldiDataError(f"{where}: ark file not found: {ark}")
            offset = _OFFSET.search(_SUFFIX.sub("", rxspecifier.strip(), count=1).rstrip())
            size = Path(ark).stat().st_size
            if offset is not None and int(offset.group()[1:]) >= size:
                raise KaldiDataError(f"{where}: offset {offset.group()[1:]} is past the end of {ark} ({size} bytes); "
                                     f"the ark is truncated or was rewritten after this scp")
        try:
            # fd_dict keeps each ark open (kaldiio never caches commands' output in it).
            return np.asarray(kaldiio.load_mat(rxspecifier, fd_dict=None if command else self._files))
        except KaldiDataError:
            raise
        except Exception as e:  # kaldiio raises ValueError, OSError, struct.error... for bad data
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise KaldiDataError(f"{where}: cannot read '{rxspecifier}' ({reason}); is the ark complete?") from e


def iter_scp(scp: PathLike, *, allow_pipes: bool = False, check_sorted: bool = True,
             keys: list[str] | None = None) -> Iterator[tuple[str, np.ndarray, int]]:
    """``(key, matrix, lineno)`` for the entries of an scp file, in file order (or in ``keys`` order).

    Every entry is checked for commands before anything is read, so a refused command in line 900 stops
    the read before line 1. ``keys`` restricts (and orders) the entries; a key not in the scp is an error.
    """
    scp = Path(scp)
    entries = read_table_entries(scp, check_sorted=check_sorted)
    for key, (value, lineno) in entries.items():
        check_rxspecifier(value, f"{scp}:{lineno}", allow_pipes=allow_pipes)
    wanted = list(entries) if keys is None else keys
    with MatrixReader(allow_pipes=allow_pipes) as reader:
        for key in wanted:
            if key not in entries:
                raise KaldiDataError(f"{scp}:0: no entry for '{key}'")
            value, lineno = entries[key]
            yield key, reader.read(value, f"{scp}:{lineno}: '{key}'"), lineno


def read_scp(scp: PathLike, *, allow_pipes: bool = False, check_sorted: bool = True) -> dict[str, np.ndarray]:
    """``{key: matrix}`` of a whole scp file (see :func:`iter_scp`)."""
    return {key: matrix for key, matrix, _ in iter_scp(scp, allow_pipes=allow_pipes, check_sorted=check_sorted)}


def read_ark(ark: PathLike, *, allow_pipes: bool = False, where: str | None = None) -> dict[str, np.ndarray]:
    """``{key: matrix}`` of a whole ark file (e.g. ``cmvn_global.ark``); ``ark`` may not be a command
    unless ``allow_pipes``. ``where`` names the setting the path came from in errors (default: the path)."""
    import kaldiio

    text = str(ark)
    check_rxspecifier(text, where or text, allow_pipes=allow_pipes)
    if not is_command(text) and not Path(text).is_file():
        raise KaldiDataError(f"{where or text}:0: ark file not found")
    try:
        return {key: np.asarray(matrix) for key, matrix in kaldiio.load_ark(text)}
    except Exception as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise KaldiDataError(f"{where or text}:0: cannot read ark ({reason}); is the file complete?") from e
