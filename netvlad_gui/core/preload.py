"""Load the engine's modules ahead of the first photo, in an order that works with Qt.

Locating and indexing run without torch where ONNX Runtime runs the model (core/model/
inference.py): ONNX Runtime, faiss and OpenCV load in well under a second. The window opens
without them; a front calls :func:`preload` in its worker thread right after, so that they are
loaded by the time a user has picked a folder or dropped a photo. torch and torchvision (about
4 s on a 2-core machine) load only for a job that torch runs (``load_engine``).

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
    """Import what describing and verifying a photo needs without torch: the query modules
    (OpenCV, faiss) and ONNX Runtime. :func:`~netvlad_gui.core.model.engine.load_engine` (the
    fronts import it from here too) loads torch, for the jobs torch runs."""
    from .model.ortmodel import require_ort
    from .query import locate, verify  # noqa: F401 - OpenCV, faiss

    try:
        require_ort()
    except ImportError:  # torch runs the model then, and loads when it is needed
        pass
