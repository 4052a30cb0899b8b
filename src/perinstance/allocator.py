"""Keep freed tensor memory in the process instead of handing it back to the operating system.

PyTorch's CPU allocator takes every tensor from malloc. glibc serves blocks above its mmap threshold
(128 KiB at start, raised adaptively) with fresh mmaps and trims the heap top above 128 KiB, so a
training step that frees and re-allocates multi-megabyte activations every step takes thousands of
minor page faults per step, each one a trip into the kernel (expensive on virtual machines). Raising
both thresholds once, at start-up, lets the heap keep those blocks for reuse: about 13 % less CPU per
training step of the default model on the 2-core VM (bench/README.md, "Machine notes"). Arithmetic is
unchanged: PyTorch aligns every CPU buffer to 64 bytes wherever it comes from, so the kernels take the
same code paths and the results stay bit-identical (tests/test_allocator.py).

The cost is resident memory: a process keeps up to `trim_threshold` bytes of freed heap. Set the
environment variable PERINSTANCE_MALLOC_TUNING=0 to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "retain_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if applied.

    A no-op (False) off glibc (macOS, musl, Windows) and when PERINSTANCE_MALLOC_TUNING=0.
    Call it before the first large allocation; blocks already mapped are unaffected.
    """
    if os.environ.get("PERINSTANCE_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        glibc = hasattr(libc, "gnu_get_libc_version")  # musl has mallopt as a stub
    except (OSError, AttributeError):
        return False
    if not glibc:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; trim first: setting the mmap threshold fixes both (no adaptation)
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    )
