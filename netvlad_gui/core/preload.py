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

import gc
import importlib
import sys

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


def load_engine() -> None:
    """Import torch, torchvision and the model code, with the garbage collector paused.

    The imports create objects that live as long as the process; the collector's full passes
    over them while they are made cost 0.6-0.9 s of the ~4.3 s of imports here. Afterwards they
    are frozen (``gc.freeze``), so later full passes skip them too. Objects die by reference
    count as before; cycles among what exists at this moment are no longer collected (the
    imports' own, ~7 MB here; a collection first would take back its 0.25 s).
    When torch is already loaded, the callers' own imports do the rest.
    """
    if "torch" in sys.modules:  # loaded already (a second job, a test): nothing to pause for
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        from .model import checkpoint, features, network  # noqa: F401 - torch, torchvision
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def preload() -> None:
    """Import what describing and verifying a photo needs (torch, torchvision, OpenCV)."""
    load_engine()
    from .query import locate, verify  # noqa: F401 - OpenCV
