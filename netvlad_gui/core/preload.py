"""Load the engine's heavy modules ahead of the first photo, in an order that works with Qt.

torch and torchvision take about 4 s to import on a 2-core machine, most of the time from a
command to its first photo (benchmarks/README.md, "Start-up"). The window opens without them; a
front calls :func:`preload` in its worker thread right after, so that they are loaded by the
time a user has picked a folder or dropped a photo.

One native library cannot be loaded that late: triton's (bundled with torch's CUDA wheels,
imported by ``torch._dynamo``, which torchvision imports) crashes the process with SIGSEGV when
it is first loaded after QtWebEngine's Chromium has started, from any thread. Loading it before
Qt costs 0.2 s: :func:`before_qt`, which ``netvlad_gui.ui`` calls on import.
"""

from __future__ import annotations

import importlib

from .model.engine import load_engine

__all__ = ["BEFORE_QT", "before_qt", "load_engine", "preload"]

#: Native modules to load before QtWebEngine starts (skipped where not installed).
BEFORE_QT = ("triton._C.libtriton",)


def before_qt() -> list[str]:
    """Load :data:`BEFORE_QT`; the names that are now loaded."""
    loaded = []
    for name in BEFORE_QT:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    return loaded


def preload() -> None:
    """Import what describing and verifying a photo needs (torch, torchvision, OpenCV).

    :func:`~netvlad_gui.core.model.engine.load_engine` (the fronts import it from here too)
    loads torch with the collector paused; then the query modules load OpenCV.
    """
    load_engine()
    from .query import locate, verify  # noqa: F401 - OpenCV
