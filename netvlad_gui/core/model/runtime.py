"""Process-wide settings that make CPU inference fast; call ``tune_process()`` once at start-up.

With glibc's default malloc, PyTorch's large activation buffers are mmap'ed and handed back to the
OS after every layer, so a forward pass spends more time in page faults than in arithmetic.
Raising the mmap and trim thresholds keeps buffers up to 32 MB (glibc's cap) in the heap; a batch
of 640x480 activations is larger, so mmap is turned off altogether (M_MMAP_MAX=0): MobileNetV2 at
batch 8 went from 116 000 to 2 300 minor page faults per image, 2.9x the speed
(benchmarks/README.md). The price: freed memory stays in the process for reuse instead of going
back to the OS, so the resident size stays at its peak. Environment variables
(``MALLOC_MMAP_THRESHOLD_``) only work when set before the process starts, so this uses
``mallopt`` through ctypes; DataLoader workers are forked and inherit it. Elsewhere it is a no-op.

OpenMP threads that wait for work spin by default; on a machine whose cores are shared, spinning
threads steal the cores the working ones need (faiss's PQ training ran 5x slower). The passive
wait policy has to be in the environment before torch or faiss load their OpenMP runtime.

``NETVLAD_NO_TUNE=1`` turns all of this off (the benchmarks' baseline).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses larger values on 64-bit
_TRIM_THRESHOLD = 1 << 40
_MMAP_MAX_DEFAULT = 65536  # glibc's own: mmap allowed again
_TRIM_AFTER_TRAINING = 64 * 1024 * 1024  # free heap above this goes back to the OS

_done = False


def tune_allocator(no_mmap: bool = True) -> bool:
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
    ok_max = mallopt(_M_MMAP_MAX, 0) == 1 if no_mmap else True
    return ok_mmap and ok_trim and ok_max


@functools.cache
def _libc() -> ctypes.CDLL:
    """glibc, found once: ``find_library`` forks ``ldconfig``, and a fork of a training process
    counts its gigabytes twice while it lasts."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_freed_memory() -> bool:
    """Let glibc hand freed memory back: large blocks mmap'ed again, the heap trimmed now.

    ``tune_allocator`` keeps every freed block for the next forward pass, which suits extraction
    (the same batch shapes over and over). Training allocates tensors of other sizes every step
    (tuples have more or fewer distinct photos), and the kept blocks fragmented the heap until
    ``netvlad train`` was killed at 12.5 GB; so a training run calls this once its frozen layers
    have run, and after each epoch. Returns whether it took effect (glibc only).
    """
    if not sys.platform.startswith("linux") or os.environ.get("NETVLAD_NO_TUNE") == "1":
        return False
    try:
        libc = _libc()
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim.argtypes = [ctypes.c_size_t]
    ok = mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER_TRAINING) == 1
    trim(0)
    return bool(ok)


def tune_openmp() -> bool:
    """Passive OpenMP waits, unless the user chose a policy; True if it can still take effect."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules and "faiss" not in sys.modules


def tune_process() -> None:
    """Everything the CLI and the GUI set once, before any model runs (and before torch loads)."""
    global _done
    if _done:
        return
    _done = True
    if os.environ.get("NETVLAD_NO_TUNE") == "1":
        return
    if not tune_openmp():
        log.debug("torch or faiss was imported before tune_process(): OpenMP policy unchanged")
    if not tune_allocator():
        log.debug("allocator tuning not available on this platform")


# -- precision ---------------------------------------------------------------------------------
#: CPU flags (Linux /proc/cpuinfo) that mean bfloat16 matrix arithmetic in hardware. Without
#: them oneDNN emulates bf16 (AVX-512 BW) or falls back to slow reference code (AVX2): fp32 wins.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = "/proc/cpuinfo"


def cpu_flags(path: str | os.PathLike | None = None) -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them; empty where there is no such file."""
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` runs bfloat16 convolutions natively (so bf16 pays)."""
    if device_type == "cuda":
        import torch

        # bf16 tensor cores from Ampere (compute capability 8.0) on
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    if device_type != "cpu":
        return False
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def backbone_precision(cfg, device_type: str = "cpu") -> str:
    """ "bf16" or "fp32": what ``cfg.precision`` (an ExtractConfig's) means on this device."""
    if cfg.bf16 or cfg.precision == "bf16":
        return "bf16"
    if cfg.precision == "fp32":
        return "fp32"
    return "bf16" if native_bf16(device_type) else "fp32"
