"""Issue 23 in the window: no stale state, menus that only offer what works, plain wording.

Offscreen Qt, the shared lund_street index (see _lund.py), no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _gui import (
    delete_later,  # noqa: F401 - fixture
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    run_js,
    wait_ready,
)

from netvlad_gui.ui.librarypanel import OPENING

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")


def test_opening_is_said_until_the_status_arrives_and_another_library_resets_the_map(
    qtbot, lund_index: Path, tmp_path: Path
) -> None:
    win = open_window(qtbot, index_dir=str(lund_index))
    # The index opens in the engine's thread (seconds: the model loads); until its status
    # arrives the panel neither offers "Build index" nor says the library is not indexed.
    panel = win.library_panel
    assert panel.stats_label.text() == OPENING
    assert panel.build_button.text() != "Build index" and not panel.build_button.isEnabled()
    wait_ready(qtbot, win)
    assert panel.build_button.text() == "Update index" and panel.build_button.isEnabled()
    assert panel.stats_label.text().startswith("19 indexed")
    # The map shows the library's streets.
    qtbot.waitUntil(lambda: run_js(qtbot, win, "nv.ui().zoom") >= 14, timeout=10_000)

    other = tmp_path / "another library"
    other.mkdir()
    win.set_library(str(other))
    assert panel.stats_label.text() == OPENING
    # Nothing of the old library keeps the view: not its place, not its zoom.
    qtbot.waitUntil(lambda: run_js(qtbot, win, "nv.ui().zoom") <= 3, timeout=10_000)
    assert run_js(qtbot, win, "nv.count().references") == 0
    qtbot.waitUntil(lambda: win.info is not None, timeout=60_000)
    assert panel.build_button.text() == "Build index" and panel.build_button.isEnabled()
    assert "Not indexed yet" in panel.stats_label.text()
    assert run_js(qtbot, win, "nv.ui().zoom") <= 3
