"""Test set-up shared by every test file."""

import os

# Qt reads these when first imported: no display needed, and QtWebEngine may run as root (CI).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

from _lund import lund_index  # noqa: F401  (session-scoped: the GUI tests share one index)
from _shared import shared_dir  # noqa: F401  (the fixture, defined in tests/_shared.py)
