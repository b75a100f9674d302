"""What every benchmark prints beside its figures: the machine, and how busy it was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(
                    f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma"))
                )
    except OSError:
        pass
    return []


def machine() -> dict:
    """CPU, cores, SIMD flags, load average, library versions: the context of a figure."""
    import faiss
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": cpu_flags(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
    }


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
