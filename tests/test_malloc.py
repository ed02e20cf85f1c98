"""glibc allocator settings used by speechattn-train (speechattn/utils/malloc.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from speechattn.utils.malloc import _glibc

# Allocate and free two 64 MB tensors per step; count the minor page faults of 4 steps after 6 warm-up
# steps (the heap settles in a few steps). With glibc's defaults each block is a fresh mmap (16,384
# faults each, every step); kept memory is reused.
PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    torch.set_num_threads(1)
    if sys.argv[1] == "keep":
        from speechattn.utils.malloc import keep_freed_memory
        assert keep_freed_memory()
    def step():
        x = torch.ones(16 * 2**20)
        return float((x * 2)[0])
    for _ in range(6):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc: keep_freed_memory() does nothing")
def test_keep_freed_memory_stops_refaulting_large_blocks():
    default, kept = minor_faults("default"), minor_faults("keep")
    # 4 steps x 2 tensors x 64 MB = 131,072 pages under glibc's defaults.
    assert default > 100_000, default
    assert kept < default / 4, (kept, default)
