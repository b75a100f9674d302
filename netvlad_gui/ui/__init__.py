"""The PySide6 desktop front end. Calls netvlad_gui.core; holds no model or index logic."""

from netvlad_gui.core.preload import before_qt

# Before any Qt module starts Chromium: torch, loaded later in the engine's thread, needs a
# native library that cannot be loaded after that (core/preload.py says which and why).
before_qt()
