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
numpy's OpenBLAS has threads of its own that spin the same way and no passive policy: on this
2-core machine under load, NetVLAD's (64 x 96) @ (96 x 1200) products took 650 ms with its two
threads and 1 ms with one, so numpy's BLAS runs in one thread (``limit_numpy_blas``); the
network's threads are ONNX Runtime's or torch's.

``NETVLAD_NO_TUNE=1`` turns all of this off (the benchmarks' baseline).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass

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


def limit_numpy_blas() -> bool:
    """numpy's own OpenBLAS in one thread (see the module's docstring); True if it took effect.

    Only numpy's: faiss's BLAS runs on OpenMP, which waits passively (``tune_openmp``)."""
    try:
        import numpy  # noqa: F401 - loads its BLAS, so that it can be found
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    libs = [c for c in ThreadpoolController().lib_controllers if "numpy" in c.filepath]
    for lib in libs:
        lib.set_num_threads(1)
    return bool(libs)


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
    limit_numpy_blas()
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


# -- which engine runs the network (ExtractConfig.runtime "auto") ------------------------------
#: From this many photos, torch in bf16 (on a CPU with native bf16) finishes an index build of
#: that backbone sooner than ONNX Runtime in fp32, its start-up (~2.1 CPU-s of imports) included:
#: measured on a 2-core Xeon with AMX (benchmarks/runtime_auto.py, benchmarks/README.md "Which
#: engine runs"), where torch bf16 ran VGG16 3.4x, AlexNet 3.2x, ResNet-18 2.3x and ResNet-50
#: 1.7x ONNX Runtime fp32 warm. MobileNetV2 (the default) is not listed: ONNX Runtime fp32 ran it
#: 1.4x torch bf16 warm, so it runs in ONNX Runtime at any length; so does a backbone not measured.
BF16_PAYS_FROM = {"vgg16": 6, "resnet50": 20, "resnet18": 50, "alexnet": 100}

ONNXRUNTIME, TORCH = "onnxruntime", "torch"
#: Where a machine's NVIDIA driver shows itself; without it torch can find no CUDA device, so
#: "auto" means the CPU without importing torch to ask.
NVIDIA_DRIVER = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


@dataclass(frozen=True)
class Engine:
    """What runs the network for one job, and why (the words ``netvlad info`` shows)."""

    runtime: str  # "onnxruntime" or "torch"
    precision: str  # "fp32" or "bf16": the backbone's arithmetic
    why: str

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "precision": self.precision, "why": self.why}


def gpu_present() -> bool:
    """Whether torch could find a CUDA GPU here; asked without importing torch when it is not
    loaded yet (no NVIDIA driver: no GPU)."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    return any(os.path.exists(p) for p in NVIDIA_DRIVER)


def device_kind(cfg) -> str:
    """ "cpu", "cuda" or "mps": where ``cfg.device`` runs the network ("auto": a CUDA GPU when
    there is one, as ``features.resolve_device`` decides)."""
    if cfg.device == "auto":
        return "cuda" if gpu_present() else "cpu"
    return cfg.device.partition(":")[0]


def asked_precision(cfg) -> str | None:
    """The precision ``cfg`` forces ("fp32"/"bf16"), or None for "auto"."""
    if cfg.bf16 or cfg.precision == "bf16":
        return "bf16"
    return "fp32" if cfg.precision == "fp32" else None


def ort_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_engine(
    cfg, *, backbone: str | None = None, photos: int | None = None, made_with: str | None = None
) -> Engine:
    """The engine for a job of ``photos`` photos (None: a short or open-ended one, e.g. the
    window's session) through ``backbone``, by the measured rules:

    - a GPU, or ``--runtime torch``: torch (ONNX Runtime runs here on the CPU only);
    - ``made_with``, the precision of the descriptors an index already holds, binds: an index
      never mixes precisions (bf16 and fp32 descriptors differ: cosine 0.97-0.99);
    - else ``--precision`` when forced; else fp32 with ``--runtime onnxruntime`` or without
      native bf16; else bf16 only for a job long enough that torch's bf16 speed on this
      backbone repays its start-up (:data:`BF16_PAYS_FROM`);
    - fp32 runs in ONNX Runtime (1.3-1.8x torch fp32, the same descriptors), bf16 in torch.
    """
    kind = device_kind(cfg)
    if kind != "cpu":
        prec = made_with or backbone_precision(cfg, kind)
        return Engine(TORCH, prec, f"torch runs on the GPU ({kind}); ONNX Runtime only on the CPU")
    if cfg.runtime == TORCH:
        return Engine(TORCH, made_with or backbone_precision(cfg, "cpu"), "--runtime torch")
    asked = asked_precision(cfg)
    if made_with:
        prec, why = made_with, f"this index's descriptors were made in {made_with}"
        if made_with == "bf16" and asked is None:
            why += " (netvlad index --precision fp32 makes them again for ONNX Runtime)"
    elif asked:
        prec, why = asked, f"--precision {asked}"
    elif cfg.runtime == ONNXRUNTIME:
        prec, why = "fp32", "--runtime onnxruntime"
    elif not native_bf16("cpu"):
        prec, why = "fp32", "this CPU has no native bf16: ONNX Runtime fp32 is the fastest"
    else:
        start = BF16_PAYS_FROM.get(backbone or "")
        if start is None:
            prec, why = "fp32", f"ONNX Runtime fp32 runs {backbone} faster than torch bf16 here"
        elif photos is None or photos < start:
            prec = "fp32"
            why = (
                f"a short job: below {start} photos torch's start-up costs more than its bf16 "
                f"speed on {backbone} saves"
            )
        else:
            prec = "bf16"
            why = f"a long job ({photos} photos): torch bf16 on this CPU's native bf16 is faster"
    if prec == "bf16":
        return Engine(TORCH, "bf16", f"{why}; ONNX Runtime runs fp32 only")
    if cfg.runtime != ONNXRUNTIME and not ort_installed():
        return Engine(TORCH, "fp32", f"{why}; onnxruntime is not installed, torch runs it")
    return Engine(ONNXRUNTIME, "fp32", why)


def engines_info(cfg, backbone: str | None = None) -> dict:
    """What ``netvlad info`` says runs the network for ``cfg`` here, and why: a short job (a
    locate, a small library) and a long one (2 000 photos), for ``backbone`` (the default
    model's when None)."""
    from importlib import metadata

    from ..config import DEFAULT_MODEL
    from .ortmodel import INSTALL

    backbone = backbone or DEFAULT_MODEL.partition("-")[0]
    short = choose_engine(cfg, backbone=backbone)
    long_job = choose_engine(cfg, backbone=backbone, photos=2000)
    try:
        ort = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort = None
    out = {
        "runtime": short.runtime,
        "runtime_precision": short.precision,
        "runtime_why": short.why,
        "runtime_asked": cfg.runtime,
        "runtime_long_job": long_job.to_json() | {"photos": 2000, "backbone": backbone},
        "onnxruntime": ort,
    }
    if ort is None:
        out["runtime_note"] = f"onnxruntime is not installed: {INSTALL}"
    return out
