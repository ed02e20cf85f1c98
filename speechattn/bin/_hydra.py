"""Shared helpers of the entry points: where the configs live, logging outside Hydra, one-line input errors."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

# The Hydra config groups ship inside the package (speechattn/conf/), so an installed wheel finds them from
# any working directory, as the source tree does.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# SPEECHATTN_DEBUG=1 (or HYDRA_FULL_ERROR=1, or the override hydra.verbose=...) shows the traceback of an
# input error instead of the one-line message.
DEBUG_ENV = "SPEECHATTN_DEBUG"

T = TypeVar("T")


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging for code running outside a Hydra app (e.g. worker processes); idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    else:
        root.setLevel(level)


def _input_error_types() -> tuple[type[BaseException], ...]:
    """Errors about the user's files (input, output paths, checkpoints): reported as one line."""
    from speechattn.data.audio import AudioError
    from speechattn.data.kaldi_dir import KaldiDataError
    from speechattn.features.cmvn import CmvnError
    from speechattn.training.experiment import ExperimentConfigError
    from speechattn.utils.checkpoint import CheckpointError

    return KaldiDataError, AudioError, CmvnError, CheckpointError, ExperimentConfigError, OSError


def find_input_error(error: BaseException) -> BaseException | None:
    """``error`` or the exception it was raised from / while handling, if one is an input error.

    Libraries wrap ours: logging's ``ValueError("Unable to configure handler 'file'")`` is raised from the
    ``PermissionError`` of an unwritable log directory, Hydra's job errors from the task's error.
    """
    types = _input_error_types()
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(error: BaseException) -> str:
    """The message of an input error on one line: ``"{path}:{line}: what"``, ``"{path}: Permission denied"``."""
    if isinstance(error, OSError) and error.filename is not None and type(error).__str__ is OSError.__str__:
        text = f"{error.filename}: {error.strerror or error}"
        if error.filename2 is not None:
            text += f" (-> {error.filename2})"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


# The user's HYDRA_FULL_ERROR, read before one_line_errors sets it for its own purpose.
_USER_HYDRA_FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR", "")


def _debug_requested() -> bool:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0") or _USER_HYDRA_FULL_ERROR not in ("", "0"):
        return True
    return any(arg.startswith("hydra.verbose=") and arg.split("=", 1)[1] not in ("", "false", "False", "null")
               for arg in sys.argv[1:])


def _log_to_files(error: BaseException, message: str) -> list[str]:
    """Write the traceback to the log files (Hydra's ``<app>.log``); returns their paths."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = logging.getLogger("speechattn").makeRecord(
        "speechattn", logging.ERROR, __file__, 0, "%s", (message,), (type(error), error, error.__traceback__))
    for handler in handlers:
        handler.handle(record)
    return [h.baseFilename for h in handlers]


@contextlib.contextmanager
def input_errors_as_one_line() -> Iterator[None]:
    """Inside a Hydra task function: an input error escaping the block is logged with its traceback to the
    log file (Hydra's ``<app>.log``), printed as ONE line on stderr, ``"PROG: error: {path}:{line}: what"``,
    and ends the program with exit status 1 (before Hydra would print it with a traceback).

    Input errors are :class:`KaldiDataError`, :class:`AudioError`, :class:`CmvnError`,
    :class:`CheckpointError` and ``OSError`` (missing files, permission denied, disk full, naming the
    path), also when a library re-raised them as something else. With ``SPEECHATTN_DEBUG=1`` (or
    ``HYDRA_FULL_ERROR=1``, or ``hydra.verbose=...``) they propagate with their traceback. Any other
    exception is a bug or a configuration error and propagates unchanged.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - anything that is not an input error is re-raised
        found = None if _debug_requested() else find_input_error(error)
        if found is None:
            raise
        message = one_line(found)
        _log_to_files(error, message)
        print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def one_line_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point (above ``@hydra.main``, or an argparse ``main``) so that an input error raised
    outside a task's :func:`input_errors_as_one_line` block (e.g. Hydra failing to create its log file in
    a read-only experiment directory) is also reported as one line with exit status 1. Other errors are
    reported as Hydra reports them (its message for a bad override, its shortened traceback otherwise).

    Example:
        >>> @one_line_errors
        ... def main() -> None:
        ...     raise FileNotFoundError(2, "No such file or directory", "data/train/wav.scp")
        >>> main()  # doctest: +SKIP
        prog: error: data/train/wav.scp: No such file or directory
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if _debug_requested():
            return main(*args, **kwargs)
        saved = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises errors (also its own) instead of printing them
        try:
            try:
                with input_errors_as_one_line():
                    return main(*args, **kwargs)
            finally:
                _restore_env(saved)
        except Exception as error:  # not an input error: as Hydra would have reported it
            _report_like_hydra(error)
            raise

    return wrapper


def _restore_env(saved: str | None) -> None:
    if saved is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = saved


def _report_like_hydra(error: Exception) -> None:
    """Print a non-input error as Hydra does without HYDRA_FULL_ERROR (its compact message for a bad
    override, its shortened traceback otherwise) and exit 1; returns only if that is impossible."""
    try:
        from hydra._internal.utils import run_and_report
    except ImportError:
        return

    # Start the traceback at Hydra's run_job, as Hydra's own report does (it looks a few frames deep only).
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "run_job":
        tb = tb.tb_next
    if tb is not None:
        error = error.with_traceback(tb)

    def reraise() -> None:
        raise error

    run_and_report(reraise)  # prints and calls sys.exit(1)
