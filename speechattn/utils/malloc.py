"""glibc malloc settings for long-utterance CPU training: keep freed memory instead of re-faulting it.

PyTorch's CPU tensors come straight from ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and unmaps it on ``free``, so the next step's activations of the
same size are page-faulted (zero-filled by the kernel) all over again. At T = 60,000 frames that is
~5 M minor faults per training step and made forward + backward 1.32x more expensive than linear growth
from 6,000 frames (``bench/README.md``, "attention"). :func:`keep_freed_memory` sets, at run time, what
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>`` would set at start-up: big blocks come from the
heap and freed memory stays with the process for the next step. Resident memory then stays at the
training peak (which it reaches on every step anyway) instead of dropping between steps. PyTorch's CPU
performance guide makes the same point with jemalloc/tcmalloc (``LD_PRELOAD``); this needs no extra
library. On non-glibc systems (macOS, musl) it does nothing and says so.

Example:
    >>> from speechattn.utils.malloc import keep_freed_memory
    >>> keep_freed_memory()  # doctest: +SKIP
    True
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

# Trim the heap top back to the OS only when more than this is free at its end: never, in practice.
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt's int argument takes
# Grow the heap in 256 MB steps: fewer brk calls for multi-GB activations.
_TOP_PAD = 256 * 2**20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no mmap for large blocks, no trimming).

    Returns True when the settings were applied, False when the C library is not glibc or refused them.
    Idempotent; affects the whole process from this call on.
    """
    libc = _glibc()
    if libc is None:
        log.info("not glibc: allocator settings left unchanged")
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (M_TOP_PAD, _TOP_PAD))
    )
    if ok:
        log.info("glibc malloc keeps freed memory for reuse (M_MMAP_MAX=0, no trimming)")
    else:
        log.warning("glibc refused the malloc settings: allocator left at its defaults")
    return ok
