"""Issue 12, a new user's first hour in the window: the photo list, the library label, notices
and warnings, results from another library, no browser, no GPS, dialogs' folders, the title.

Offscreen Qt; the window tests use the shared lund_street index (built once per session).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from _gui import (
    delete_later,  # noqa: F401 - fixture
    drop_files,
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    wait_results,
)
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog

from netvlad_gui.core.library.status import LibraryStatus
from netvlad_gui.ui import filedialogs
from netvlad_gui.ui.librarypanel import LibraryPanel
from netvlad_gui.ui.mainwindow import MainWindow
from netvlad_gui.ui.notices import LogDock
from netvlad_gui.ui.queuepanel import DONE, WAITING, QueuePanel
from netvlad_gui.ui.thumbnails import ThumbnailLoader

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")


def test_photo_list_rows_names_and_duplicates(qtbot, tmp_path: Path, queries: Path) -> None:
    thumbs = ThumbnailLoader()
    panel = QueuePanel(thumbs)
    qtbot.addWidget(panel)
    other = tmp_path / "trip"
    other.mkdir()
    shutil.copy(queries / "05.jpg", other / "02.jpg")
    first = panel.add([str(queries / "02.jpg"), str(queries / "05.jpg")])
    assert [e.display_name for e in first] == ["02.jpg", "05.jpg"]
    # The same photo again adds nothing; another 02.jpg shows both parents.
    assert panel.add([str(queries / "02.jpg")]) == []
    panel.add([str(other / "02.jpg")])
    assert [e.display_name for e in panel.entries()] == ["queries/02.jpg", "05.jpg", "trip/02.jpg"]
    assert panel.list.item(0).text().startswith("queries/02.jpg\n")
    # Every row has the same, fixed height: two text lines or the thumbnail, never squeezed.
    heights = {panel.list.item(i).sizeHint().height() for i in range(panel.list.count())}
    assert len(heights) == 1 and heights.pop() >= 42
    assert str(queries / "02.jpg") in panel.list.item(0).toolTip()  # the full path, unelided
    thumbs.shutdown()


def test_library_label_is_the_path_elided_in_the_middle(qtbot) -> None:
    panel = LibraryPanel()
    qtbot.addWidget(panel)
    panel.resize(220, 200)
    panel.show()
    path = "/home/someone/Pictures/2024 holidays/a long trip to the north/references"
    panel.set_library(path)
    qtbot.waitUntil(lambda: "…" in panel.path_label.text())
    shown = panel.path_label.text()
    assert shown.startswith("/home") and shown.endswith("references")  # both ends kept
    assert panel.path_label.toolTip() == path
    panel.resize(2000, 200)
    qtbot.waitUntil(lambda: panel.path_label.text() == path)


def test_warnings_count_each_file_once(qtbot) -> None:
    dock = LogDock(logger="netvlad_gui.test_warnings")
    qtbot.addWidget(dock)
    log = logging.getLogger("netvlad_gui.test_warnings")
    try:
        for name in ("a.jpg", "b.jpg"):
            log.warning("cannot locate %s", name, extra={"file": f"/x/{name}"})
            log.warning("no thumbnail for %s", name, extra={"file": f"/x/{name}"})
        log.warning("something else")
        qtbot.waitUntil(lambda: dock.view.warnings == 3)
        assert dock.warnings_button.text() == "⚠ 3 warnings"
    finally:
        dock.detach()


def test_bad_files_one_notice_naming_all_and_counted_once(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    bad = []
    for i in range(4):
        path = tmp_path / f"broken{i}.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
        bad.append(path)
    drop_files(window, bad)
    tokens = [e.token for e in window.queue.entries()]
    wait_results(qtbot, window, tokens)
    # Each file failed to locate and to make a thumbnail: 4 warnings, not 8.
    qtbot.waitUntil(lambda: window.warnings_button.text() == "⚠ 4 warnings")
    text = window.notice.text
    assert text.startswith("Cannot locate 4 photos: broken0.jpg, broken1.jpg, broken2.jpg")
    assert "and 1 more" in text
    assert window.notice.action_button.isVisible()
    assert window.notice.action_button.text() == "Show all"
    window.notice.action_button.click()
    assert window.log_dock.isVisible()
    log_text = window.log_view.toPlainText()
    assert all(f"Cannot locate {p.name}" in log_text for p in bad)


def test_results_from_another_library_are_marked_and_can_be_located_again(
    qtbot, window: MainWindow, queries: Path, tmp_path: Path
) -> None:
    drop_files(window, [queries / "02.jpg"])
    token = window.queue.entries()[0].token
    wait_results(qtbot, window, [token])
    assert window.queue.entry(token).state == DONE and window.results.copy_button.isEnabled()

    other = tmp_path / "other library"
    other.mkdir()
    window.set_library(str(other))
    entry = window.queue.entry(token)
    assert entry.stale and entry.result is not None  # kept, but never shown as current
    assert "from another library" in window.queue.list.item(0).text()
    assert "From another library" in window.results.prediction.text()
    assert not window.results.copy_button.isEnabled()
    assert window.results.matches.count() == 0
    assert "previous library" in window.notice.text
    assert window.notice.action_button.text() == "Locate again"
    assert window.queue.relocate_button.isVisibleTo(window.queue)
    assert window.queue.results() == []  # nor exported as an answer about this library

    qtbot.waitUntil(lambda: window.info is not None)  # the new library: not indexed
    window.notice.action_button.click()  # Locate again: waits for this library's index
    entry = window.queue.entry(token)
    assert entry.state == WAITING and not entry.stale and entry.result is None
    assert not window.queue.relocate_button.isVisibleTo(window.queue)
    assert "Build the library's index first" in window.notice.text


def test_no_browser_says_so_and_offers_the_link(
    qtbot, window: MainWindow, queries: Path, monkeypatch
) -> None:
    from netvlad_gui.ui import resultspanel

    class NoBrowser:
        @staticmethod
        def openUrl(url) -> bool:
            return False

    monkeypatch.setattr(resultspanel, "QDesktopServices", NoBrowser)
    drop_files(window, [queries / "02.jpg"])
    wait_results(qtbot, window, [window.queue.entries()[0].token])
    window.results.osm_button.click()
    assert window.notice.isVisible() and "Could not open a web browser" in window.notice.text
    url = window.notice.text.split("link is ", 1)[1]
    assert url.startswith("https://www.openstreetmap.org/?mlat=55.69")
    window.notice.action_button.click()  # Copy link
    assert QGuiApplication.clipboard().text() == url


def test_a_library_without_gps_warns_instead_of_index_ready(qtbot, window: MainWindow) -> None:
    status = LibraryStatus(
        index_dir=window.index_dir, library=window.library, exists=True, indexed=6, with_gps=0
    )
    window._on_index_opened(status)
    assert window.notice.level == "warning"
    assert "None of the 6 indexed photos has GPS" in window.notice.text
    assert "gps.csv" in window.notice.text and "EXIF" in window.notice.text
    assert "No photo has GPS" in window.library_panel.stats_label.text()


def test_title_and_dialogs_start_near_the_library(qtbot, tmp_path: Path, monkeypatch) -> None:
    library = tmp_path / "photos" / "library"
    library.mkdir(parents=True)
    win = open_window(qtbot, library=str(library))
    assert "netvlad-gui" not in win.windowTitle()  # Qt appends the application name itself
    starts = []

    def fake_open(parent, caption, start, filters):
        starts.append(start)
        return [str(tmp_path / "elsewhere" / "x.jpg")], ""

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(fake_open))
    (tmp_path / "elsewhere").mkdir()
    assert filedialogs.photos(win, win.library)
    assert starts == [str(library.parent)]  # nothing used yet: next to the library
    filedialogs.photos(win, win.library)
    assert starts[-1] == str(tmp_path / "elsewhere")  # then the last folder used
    assert filedialogs.last_folder() == str(tmp_path / "elsewhere")
