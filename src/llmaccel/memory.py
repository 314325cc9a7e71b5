"""Allocator setting for long prompts: keep freed memory for reuse instead of returning it.

Why: glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so each
large temporary of a long prefill (an 8k-token prompt's MLP activations are 50 MB) is page-faulted
in anew: 11 ms to allocate and fill 50 MB here, vs ~1 ms to add two tensors of that size once the
pages are mapped. Served from the heap and kept there, the pages are reused. Measured on an 8k-token
SmolLM2 prefill (2 cores): sparse 11.4 s -> 10.6 s, dense unchanged (BENCHMARKS.md, "sparse prefill").
PyTorch's CPU tuning guide recommends a caching allocator (jemalloc, tcmalloc) for the same reason;
this gets the effect with glibc's own knobs, no extra library. Linux/glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and do not trim it (once per process). True if applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc
        ok = False
    log.debug("malloc: keep freed memory %s", "on" if ok else "unavailable")
    _done = ok
    return ok
