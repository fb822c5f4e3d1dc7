"""Keep a long-lived worker's memory from growing with the number of client jobs it has served.

glibc's allocator keeps freed heap pages and raises its mmap threshold with the sizes it sees, so a
worker that runs many client jobs with different padded shapes and ranks holds more and more freed
memory (measured: +19% RSS over 50 MiniLM clients; ``benchmarks/results/worker.md``). ``malloc_trim(0)``
returns every whole free page of every arena to the OS (``madvise(MADV_DONTNEED)`` inside the heap, not
only at its top), so a worker that calls it after each job starts every job from the same footprint; the
next job faults its working set in again (measured: about 2% of a 3-step MiniLM job). On other C
libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_memory() -> bool:
    """Call glibc ``malloc_trim(0)``; True when memory was returned, False when none was (or not glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
