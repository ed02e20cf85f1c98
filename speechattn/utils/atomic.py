"""Atomic file writes: an interrupted stage never leaves a half-written file that looks complete.

A write that fails because of the disk or the permissions (no space left, quota, read-only file system,
permission denied) raises :class:`OutputError` naming the file that was being written, not the temporary
file beside it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

# errno values that can only come from writing: when one of them escapes the body of `atomic_open`, the
# file being written is the one to name.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class OutputError(OSError):
    """An output file could not be written; ``str()`` is ``"{path}: cannot write: {reason}"``."""

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None) -> None:
        super().__init__(code, reason, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: cannot write: {self.strerror}"

    def __reduce__(self):  # pickled across processes (feature-extraction workers) with its own arguments
        return type(self), (self.filename, self.strerror, self.errno)


def _reason(error: OSError, path: Path) -> str:
    """Why writing ``path`` failed, in words a user can act on (with the free space when the disk is full)."""
    reason = error.strerror or str(error)
    directory = path.parent
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):
            reason += f" ({shutil.disk_usage(directory).free / 2**20:.1f} MiB free in {directory})"
    elif error.errno in (errno.EACCES, errno.EPERM):
        blocked = Path(error.filename).parent if error.filename else directory  # e.g. a parent mkdir failed
        reason += f" (cannot create files in {blocked})"
    return reason


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """``error`` (raised while writing ``path``) as an :class:`OutputError` naming ``path``."""
    if isinstance(error, OutputError):
        return error
    path = Path(path)
    return OutputError(path, _reason(error, path), error.errno)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    The rename is atomic on POSIX file systems, so readers see either the old file or the complete new
    one. On an exception the temporary file is removed and ``path`` is untouched. Disk-full and permission
    errors while creating, writing or renaming raise :class:`OutputError` naming ``path``.

    Example:
        >>> with atomic_open("out/scores.json") as f:
        ...     f.write("{}")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise output_error(path, e) from e
    binary = "b" in mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH) & ~umask)
    try:
        try:
            with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            # Errors that only writing produces, and those of our flush/fsync/rename (no file name, or the
            # temporary/final name), name the output file; an error of the caller's own reads inside the
            # block (e.g. an input file not found, named in the error) passes unchanged.
            if not isinstance(e, OutputError) and (e.errno in _WRITE_ERRNOS or e.filename in (None, tmp, str(path))):
                raise output_error(path, e) from e
            raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
