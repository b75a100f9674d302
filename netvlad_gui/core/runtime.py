"""Process-wide settings that make CPU inference fast; call ``tune_process()`` once at start-up.

With glibc's default malloc, PyTorch's large activation buffers are mmap'ed and handed back to the
OS after every layer, so a forward pass spends more time in page faults than in arithmetic.
Raising the mmap and trim thresholds keeps those buffers in the heap. Environment variables
(``MALLOC_MMAP_THRESHOLD_``) only work when set before the process starts, so this uses
``mallopt`` through ctypes; DataLoader workers are forked and inherit it. Elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses larger values on 64-bit
_TRIM_THRESHOLD = 1 << 40

_done = False


def tune_allocator() -> bool:
    """Keep large freed blocks in the heap (glibc only). Returns whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(_TRIM_THRESHOLD, 2**31 - 1)).value) == 1
    return ok_mmap and ok_trim


def tune_process() -> None:
    """Everything the CLI and the GUI set once, before any model runs."""
    global _done
    if _done:
        return
    _done = True
    if not tune_allocator():
        log.debug("allocator tuning not available on this platform")
