"""Import the network code (torch, torchvision) with the garbage collector paused.

Here, in the model layer, so that a build (core/library) can load it without reaching
core/preload.py, which also warms up what a query needs; the fronts call it through preload.
"""

from __future__ import annotations

import gc
import sys


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
        from . import checkpoint, features, network  # noqa: F401 - torch, torchvision
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
