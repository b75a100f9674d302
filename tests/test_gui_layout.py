"""Issue 23: the window fits small screens and keeps still.

Everything fits 1280x720 with the Retrain panel docked and 1024x700 without it, whatever the
photo's name or verdict; nothing a result shows makes the window wider. Offscreen Qt: a window
cannot be resized below its minimum size, so ``resize`` then ``size`` checks the minimum the way
a window manager would meet it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _gui import (
    delete_later,  # noqa: F401 - fixture
    isolated_settings,  # noqa: F401 - fixture
    wait_results,
)
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QApplication, QWidget

from netvlad_gui.core.query.result import LocateResult, Match
from netvlad_gui.core.query.verdict import LOCATED, NOT_FOUND
from netvlad_gui.ui.queuepanel import DONE, Entry
from netvlad_gui.ui.resultspanel import ResultsPanel
from netvlad_gui.ui.thumbnails import ThumbnailLoader

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")

LONG_NAME = "IMG_20240817_184455_HDR_panorama_from_the_cathedral_steps_" * 2 + "berlin.jpg"


def settle(qtbot) -> None:
    """Let queued layout requests and resizes run."""
    for _ in range(3):
        QApplication.processEvents()
        qtbot.wait(20)


def rect_in(widget: QWidget, ancestor: QWidget) -> QRect:
    return QRect(widget.mapTo(ancestor, QPoint(0, 0)), widget.size())


def assert_inside(widget: QWidget, ancestor: QWidget) -> None:
    """``widget`` is drawn wholly within ``ancestor`` (nothing cut off at its edges)."""
    assert ancestor.rect().contains(rect_in(widget, ancestor)), (
        f"{widget.objectName() or type(widget).__name__} at {rect_in(widget, ancestor)} is "
        f"outside {ancestor.rect()}"
    )


def fits(qtbot, window, width: int, height: int) -> None:
    """The window can be ``width`` x ``height`` (its minimum allows it) and is."""
    settle(qtbot)  # the window's layout takes in what changed first
    window.resize(width, height)
    settle(qtbot)
    hint = window.minimumSizeHint()
    assert hint.width() <= width and hint.height() <= height, hint
    assert (window.width(), window.height()) == (width, height)


def not_found(path: str, name_count: int = 5) -> LocateResult:
    matches = [
        Match(r, f"/refs/{r:02d}.jpg", 55.7, 13.19, 0.5, 30.0 * r, inliers=4)
        for r in range(1, name_count + 1)
    ]
    return LocateResult(
        query=path,
        lat=55.7,
        lon=13.19,
        matches=matches,
        verdict=NOT_FOUND,
        verified=True,
        best_inliers=5,
        verdict_reason="no match shares enough points with the photo",
    )


def test_the_result_header_never_asks_for_more_width(qtbot) -> None:
    """The name is elided (its text stays whole), the verdict wraps, the actions turn to icons
    with their words in the tooltip; the panel's least width does not depend on the result."""
    thumbs = ThumbnailLoader()
    panel = ResultsPanel(thumbs)
    qtbot.addWidget(panel)
    try:
        panel.resize(1400, 300)
        panel.show()
        short = Entry(1, "/photos/02.jpg", state=DONE, result=not_found("/photos/02.jpg"))
        panel.show_entry(short, (1, 3))
        settle(qtbot)
        least = panel.minimumSizeHint().width()
        assert not panel.copy_button.compact and not panel.title.is_elided()  # room for words

        long = Entry(2, f"/photos/{LONG_NAME}", state=DONE, result=not_found(LONG_NAME))
        panel.show_entry(long, (2, 3))
        settle(qtbot)
        assert panel.minimumSizeHint().width() == least  # the same for any name or verdict
        panel.resize(620, 300)  # narrow: smaller thumbnails (the Retrain panel beside it)
        settle(qtbot)
        least = panel.minimumSizeHint().width()
        assert least <= 440
        for width in (1400, 900, 620, least):
            panel.resize(width, 300)
            settle(qtbot)
            assert panel.width() == width
            assert panel.title.text() == LONG_NAME  # elided when drawn, whole when read
            for w in (panel.title, panel.verdict, panel.copy_button, panel.osm_button):
                assert_inside(w, panel)
            assert panel.next_button.isVisible()
            assert_inside(panel.next_button, panel)
        assert panel.title.is_elided() and panel.copy_button.compact
        assert panel.copy_button.text() == "Copy guessed coordinates"  # what it does, in words
        assert "guess" in panel.copy_button.toolTip() and "guess" in panel.osm_button.toolTip()
        assert "Not found in this library" in panel.verdict.text()
        panel.resize(1400, 300)
        settle(qtbot)
        assert not panel.copy_button.compact  # the words come back with the room
    finally:
        thumbs.shutdown()


def test_the_window_fits_1024x700_and_1280x720_with_the_retrain_panel(
    qtbot, window_640, shared_dir: Path, queries: Path, tmp_path: Path
) -> None:
    window = window_640  # Berlin is not found at the default 640 px
    berlin = shared_dir / "data" / "exif" / "gps_photos" / "opensfm_berlin" / "02.jpg"
    if not berlin.is_file():
        pytest.skip(f"{berlin} not found")
    far = tmp_path / LONG_NAME
    shutil.copy(berlin, far)
    fits(qtbot, window, 1024, 700)
    tokens = window.open_inputs([str(far), str(queries / "02.jpg")])
    window.queue.set_current(tokens[0])
    wait_results(qtbot, window, tokens)
    settle(qtbot)
    assert window.queue.entry(tokens[0]).result.verdict == NOT_FOUND
    assert window.queue.entry(tokens[1]).result.verdict == LOCATED
    # A long not-found result: the window keeps its size, all of the header is on screen.
    assert (window.width(), window.height()) == (1024, 700)
    fits(qtbot, window, 1024, 700)
    results = window.results
    for w in (results.title, results.verdict, results.copy_button, results.next_button):
        assert_inside(w, window)
    assert results.title.text() == LONG_NAME

    # The layout keeps still: the left column keeps its width from photo to photo, and a
    # notice floats over the map instead of pushing the work area down.
    left = window.splitter.sizes()
    where = {w: rect_in(w, window) for w in (window.map, window.results, window.queue)}
    window.queue.set_current(tokens[1])
    settle(qtbot)
    assert window.results.entry.token == tokens[1]
    window.queue.set_current(tokens[0])
    settle(qtbot)
    assert window.splitter.sizes() == left
    window.show_notice("A warning that stays until it is closed. " * 6, "warning")
    settle(qtbot)
    assert window.notice.isVisible()
    assert {w: rect_in(w, window) for w in where} == where
    assert rect_in(window.map, window).contains(rect_in(window.notice, window))
    assert (window.width(), window.height()) == (1024, 700)
    window.notice.close_button.click()

    # 1280x720 with the Retrain panel docked: its settings, buttons and charts are on screen,
    # the results keep room for their matches.
    fits(qtbot, window, 1280, 720)
    panel = window.open_training()
    settle(qtbot)
    fits(qtbot, window, 1280, 720)
    assert window.train_dock.isVisible() and not window.train_dock.isFloating()
    for w in (
        panel.settings_area,
        panel.start_button,
        panel.build_button,
        panel.charts.loss_view,
        panel.charts.recall_view,
        panel.log_view,
        results.next_button,
        results.copy_button,
    ):
        assert w.isVisible()
        assert_inside(w, window)
    assert panel.charts.loss_view.height() >= 150
    assert results.matches.width() >= 2 * 100  # two compact thumbnails at least

    # Without the panel, back to 1024x700: nothing holds the window wide.
    window.train_dock.close()
    fits(qtbot, window, 1024, 700)
