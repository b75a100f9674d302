"""Test set-up shared by every test file."""

import os

import pytest

# Qt reads these when first imported: no display needed, and QtWebEngine may run as root (CI).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

from _lund import (  # noqa: F401  (session-scoped: the GUI tests share one index)
    lund_index,
    lund_index_640,
)
from _shared import shared_dir  # noqa: F401  (the fixture, defined in tests/_shared.py)


@pytest.fixture
def queries(shared_dir):  # noqa: F811 - the imported fixture
    """The five lund street queries."""
    return shared_dir / "data" / "lund_street" / "queries"


@pytest.fixture
def window(qtbot, lund_index):  # noqa: F811 - the imported fixture
    """The main window on the session's lund index, ready to locate (the GUI tests)."""
    from _gui import open_window, wait_ready

    win = open_window(qtbot, index_dir=str(lund_index))
    wait_ready(qtbot, win)
    return win


@pytest.fixture
def window_640(qtbot, lund_index_640):  # noqa: F811 - the imported fixture
    """The main window on the lund index at the default 640 px: where a photo from another city
    is "not found" (at the tests' 320 px the library cannot tell Berlin from Lund: uncertain)."""
    from _gui import open_window, wait_ready

    win = open_window(qtbot, index_dir=str(lund_index_640), image_size=640)
    wait_ready(qtbot, win)
    return win
