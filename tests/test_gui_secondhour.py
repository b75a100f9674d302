"""Issue 23 in the window: no stale state, menus that only offer what works, plain wording.

Offscreen Qt, the shared lund_street index (see _lund.py), no network.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _gui import (
    delete_later,  # noqa: F401 - fixture
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    run_js,
    wait_ready,
    wait_results,
)
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QTextDocument

from netvlad_gui.core.query.verdict import NOT_FOUND
from netvlad_gui.ui.librarypanel import OPENING, LibraryPanel
from netvlad_gui.ui.mapdata import format_coords
from netvlad_gui.ui.queuepanel import FAILED, ICON
from netvlad_gui.ui.stallmeter import StallMeter

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


def shown(text: str) -> str:
    """A label's text as read: without the tags and the zero-width break points."""
    doc = QTextDocument()
    doc.setHtml(text)
    return doc.toPlainText().replace("\u200b", "")


def test_edit_menu_rows_and_wording_follow_what_was_located(
    qtbot, window_640, queries: Path, shared_dir: Path, tmp_path: Path
) -> None:
    window = window_640  # Berlin is not found at the default 640 px
    # Nothing located: Edit → Copy / Open offer nothing (they used to be enabled and do nothing).
    assert not window.copy_action.isEnabled() and not window.osm_action.isEnabled()
    berlin = shared_dir / "data" / "exif" / "gps_photos" / "opensfm_berlin" / "02.jpg"
    if not berlin.is_file():
        pytest.skip(f"{berlin} not found")
    fake = tmp_path / ("a_scan_that_is_no_photo_at_all_" * 3 + ".jpg")
    fake.write_bytes(b"%PDF-1.4\n" + b"0" * 2000)
    lund, far, bad = window.open_inputs([str(queries / "02.jpg"), str(berlin), str(fake)])
    window.queue.set_current(lund)
    wait_results(qtbot, window, [lund, far, bad])

    # A located photo: the menu copies the predicted coordinates, its row shows the confidence.
    QGuiApplication.clipboard().clear()
    window.queue.set_current(lund)
    assert window.copy_action.isEnabled() and window.osm_action.isEnabled()
    assert window.copy_action.text().replace("&", "") == "Copy predicted coordinates"
    window.copy_action.trigger()
    res = window.queue.entry(lund).result
    assert QGuiApplication.clipboard().text() == format_coords(res.lat, res.lon)
    row = window.queue.list.item(0)
    lines = row.text().split("\n")
    assert lines[1] == "Located" and lines[2].startswith(f"{res.confidence * 100:.0f} %")
    fm = window.queue.list.fontMetrics()
    room = window.queue.list.viewport().width() - ICON.width() - 16  # beside the thumbnail
    assert "%" in fm.elidedText(lines[2], Qt.TextElideMode.ElideRight, room)  # not cut off

    # Not found: the menu says "guess", as the panel's buttons do.
    window.queue.set_current(far)
    assert window.queue.entry(far).result.verdict == NOT_FOUND
    assert window.copy_action.isEnabled()
    assert window.copy_action.text().replace("&", "") == "Copy guessed coordinates"
    assert "guess" in window.osm_action.text()

    # A file no decoder reads: the window shows core's reason whole, and offers no place.
    window.queue.set_current(bad)
    entry = window.queue.entry(bad)
    assert entry.state == FAILED and entry.error
    assert not window.copy_action.isEnabled() and not window.osm_action.isEnabled()
    assert entry.error in shown(window.results.prediction.text())
    assert entry.error in window.queue.list.item(2).toolTip()
    assert window.queue.list.item(2).text().split("\n")[1:] == ["Cannot locate", entry.error]

    # Dropped again: said in plain grammar, not added twice.
    assert window.open_inputs([str(queries / "02.jpg")]) == []
    assert window.statusBar().currentMessage() == "This photo is in the list already."
    window.open_inputs([str(queries / "02.jpg"), str(queries / "05.jpg")])
    assert window.statusBar().currentMessage() == "1 of the photos is in the list already."
    window.open_inputs([str(queries / "02.jpg"), str(berlin)])
    assert window.statusBar().currentMessage() == "These 2 photos are in the list already."
    # The stall meter's figures are for developers (--measure-stalls), not the user's log.
    assert "worst GUI stall" not in window.log_view.toPlainText()


def test_stall_figures_reach_the_log_only_when_measuring(qtbot, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="netvlad_gui")
    for measuring in (False, True):
        meter = StallMeter(on_demand=not measuring)
        meter.begin("locating")
        qtbot.wait(30)
        caplog.clear()
        meter.end("locating")
        meter.stop()
        (record,) = [r for r in caplog.records if "worst GUI stall" in r.getMessage()]
        assert record.levelno == (logging.INFO if measuring else logging.DEBUG)


def test_single_step_build_stages_show_a_busy_bar(qtbot) -> None:
    """Loading the model (0 then 1 of 1) and finishing (0 of 1) are one step each: a busy bar,
    not a full "1 / 1" one while the model still loads, nor an empty "0 / 1"."""
    panel = LibraryPanel()
    qtbot.addWidget(panel)
    panel.set_busy(True)
    bar = panel.progress_bar
    for stage, done, total in (("model", 0, 1), ("model", 1, 1), ("finalize", 0, 1)):
        panel.on_progress(stage, done, total)
        assert (bar.minimum(), bar.maximum()) == (0, 0), (stage, done, total)  # busy
        assert "/" not in bar.text()
    panel.on_progress("extract", 3, 19)
    assert (bar.maximum(), bar.value(), bar.text()) == (19, 3, "3 / 19")
    panel.on_progress("finalize", 2, 5)  # the search index's steps, when there are several
    assert (bar.maximum(), bar.value()) == (5, 2)
