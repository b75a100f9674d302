"""The main window end to end: drop -> worker -> core -> results, thumbnails and map markers.

Offscreen Qt, the shared lund_street index (built once per session at 320 px), no network.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from _gui import (
    LOCATE_TIMEOUT_MS,
    GuiPing,
    delete_later,  # noqa: F401 - fixture
    drop_files,
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    run_js,
    wait_ready,
    wait_results,
)
from PySide6.QtCore import QObject, QSettings, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication

from netvlad_gui.ui.mainwindow import LaunchOptions, MainWindow
from netvlad_gui.ui.queuepanel import DONE, FAILED

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")

TOP_N = 5
EVIL = "<script>window.pwned=1<script><img src=x onerror=window.pwned=2>.jpg"
CANARY = (  # an image that cannot load and says so
    "(() => { const i = new Image(); i.onerror = () => { window.nvCanary = 1 }; "
    "i.src = 'x'; return 1 })()"
)


def test_drop_shows_result_thumbnails_and_markers(qtbot, window: MainWindow, queries) -> None:
    assert window.pages.currentIndex() == 1  # the workspace, not the first-start page
    assert window.info.indexed == 19 and len(window.info.references) == 19
    assert drop_files(window, [queries / "02.jpg"])
    entries = window.queue.entries()
    assert [e.name for e in entries] == ["02.jpg"]
    wait_results(qtbot, window, [entries[0].token])

    entry = window.queue.entry(entries[0].token)
    assert entry.state == DONE, entry.error
    res = entry.result
    assert len(res.matches) == TOP_N and res.lat is not None
    assert res.error_m is not None and res.error_m < 25  # its own EXIF GPS is the truth
    assert window.results.entry is entry and window.results.title.text() == "02.jpg"
    assert window.results.matches.count() == TOP_N
    assert "confidence" in window.results.prediction.text()

    # Thumbnails come from the pool (QImage), then show as pixmaps.
    qtbot.waitUntil(lambda: window.results.thumbnails_pending() == 0, timeout=30_000)
    assert not window.results.query_image.pixmap().isNull()
    icon = window.results.matches.item(0).icon()
    assert icon.pixmap(64, 48).width() > 0

    # The map holds the references, the prediction, its truth and the numbered matches.
    def counts():
        return run_js(qtbot, window, "nv.count()")

    qtbot.waitUntil(lambda: (counts() or {}).get("matches") == TOP_N, timeout=10_000)
    c = counts()
    assert (c["references"], c["prediction"], c["truth"]) == (19, 1, 1)

    # Selection is synced both ways.
    window.results.matches.setCurrentRow(1)
    qtbot.waitUntil(lambda: counts()["selected"] == 2, timeout=5_000)
    window.map.run_js("nv.matchMarker(3).fire('click')")
    qtbot.waitUntil(lambda: window.results.selected_rank() == 3, timeout=5_000)
    assert window.locate_times and window.locate_times[0] < 60


def test_drop_on_the_map_locates(qtbot, window: MainWindow, queries) -> None:
    target = window.map.focusProxy() or window.map
    drop_files(target, [queries / "05.jpg"])
    qtbot.waitUntil(lambda: len(window.queue.entries()) == 1, timeout=5_000)
    assert window.queue.entries()[0].name == "05.jpg"
    assert window.map.url().isLocalFile()  # the page was not replaced by the photo


def test_bad_files_give_a_clear_message_and_the_app_keeps_working(
    qtbot, window: MainWindow, queries, tmp_path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)

    drop_files(window, [notes])
    assert window.notice.isVisible() and "notes.txt (not a photo)" in window.notice.text
    assert window.queue.entries() == []

    drop_files(window, [broken])
    token = window.queue.entries()[0].token
    wait_results(qtbot, window, [token])
    entry = window.queue.entry(token)
    assert entry.state == FAILED and "image" in entry.error
    assert "Cannot locate broken.jpg" in window.notice.text
    assert "Cannot locate this photo" in window.results.prediction.text()
    assert "Cannot locate broken.jpg" in window.log_view.toPlainText()  # the log window
    assert window.warnings_button.isVisible()

    drop_files(window, [queries / "08.jpg"])
    good = window.queue.entries()[-1].token
    wait_results(qtbot, window, [good])
    assert window.queue.entry(good).state == DONE


def test_stop_during_a_multi_photo_locate_stops_between_photos(
    qtbot, window: MainWindow, queries
) -> None:
    """Stop while photo 2 of 5 is being located: photo 2 finishes, 3-5 stay in the queue."""
    session = window.engine._session
    real_stages = session.stages
    second_started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def gated_stages(path, cfg=None, **kw):  # runs in the worker thread, once per photo
        calls.append(str(path))
        if len(calls) == 2:
            second_started.set()
            release.wait(LOCATE_TIMEOUT_MS / 1000)  # until the test has clicked Stop
        return real_stages(path, cfg, **kw)

    session.stages = gated_stages  # what the engine worker calls per photo
    finished: list[tuple[int, bool]] = []
    window.engine.locateFinished.connect(lambda n, cancelled: finished.append((n, cancelled)))
    photos = sorted(queries.glob("*.jpg"))
    assert len(photos) == 5
    try:
        tokens = window.open_inputs([str(p) for p in photos])
        qtbot.waitUntil(second_started.is_set, timeout=LOCATE_TIMEOUT_MS)
        assert window.stop_button.isVisible()
        qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    finally:
        release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=LOCATE_TIMEOUT_MS)
    assert finished == [(2, True)] and len(calls) == 2

    def states() -> list[str]:
        return [window.queue.entry(t).state for t in tokens]

    # ``finished`` is appended in the worker thread; the window gets photo 2 a moment later
    qtbot.waitUntil(lambda: states()[:2] == [DONE, DONE], timeout=5_000)
    states = states()
    assert states[:2] == [DONE, DONE] and all(s == "waiting" for s in states[2:]), states
    qtbot.waitUntil(lambda: not window.stop_button.isVisible(), timeout=5_000)


def test_a_file_name_with_markup_is_shown_as_text(
    qtbot, window: MainWindow, queries, tmp_path
) -> None:
    evil = tmp_path / EVIL
    shutil.copy(queries / "11.jpg", evil)
    drop_files(window, [evil])
    token = window.queue.entries()[0].token
    wait_results(qtbot, window, [token])
    assert window.queue.entry(token).state == DONE
    assert window.results.title.text() == EVIL
    assert window.results.title.textFormat() == Qt.TextFormat.PlainText
    assert window.queue.list.item(0).text().startswith(EVIL)

    qtbot.waitUntil(lambda: run_js(qtbot, window, "nv.count().prediction") == 1, timeout=10_000)
    window.map.run_js("nv.layers().prediction.openTooltip()")
    qtbot.waitUntil(
        lambda: (
            EVIL
            in (
                run_js(qtbot, window, "document.querySelector('.leaflet-tooltip-pane').textContent")
                or ""
            )
        ),
        timeout=5_000,
    )
    # A canary image that fails to load: once its onerror ran, a wrongly created <img
    # onerror> from the tooltip (requested earlier) has had its chance to fire too.
    run_js(qtbot, window, CANARY)
    qtbot.waitUntil(lambda: run_js(qtbot, window, "window.nvCanary === 1"), timeout=10_000)
    assert run_js(qtbot, window, "typeof window.pwned") == "undefined"
    assert run_js(qtbot, window, "document.querySelectorAll('img[src=\"x\"]').length") == 0


def test_many_photos_step_copy_open_and_export(
    qtbot, window: MainWindow, queries, tmp_path
) -> None:
    # After the first result the engine asks the GUI thread for an answer, with four photos
    # still to go: the window stays responsive while it locates (however loaded the machine).
    ping, answered = GuiPing(), []

    def on_located(token: int, _result) -> None:
        if not answered:
            answered.append(ping.ask())

    window.engine.staged.connect(on_located, Qt.ConnectionType.DirectConnection)
    drop_files(window, [queries])  # a folder: every photo in it
    tokens = [e.token for e in window.queue.entries()]
    assert len(tokens) == 5
    wait_results(qtbot, window, tokens)
    window.engine.staged.disconnect(on_located)
    assert answered == [True] and threading.main_thread().ident not in ping.ask_threads
    located = [window.queue.entry(t).result for t in tokens]
    assert all(r.lat is not None for r in located)
    assert sum(r.error_m < 25 for r in located) >= 4  # Recall@N at 25 m, with the fast model

    assert window.results.position_label.text() == "1 of 5"
    window.results.next_button.click()
    assert window.results.entry.token == tokens[1]
    assert window.results.position_label.text() == "2 of 5"
    window.results.prev_button.click()
    assert window.results.entry.token == tokens[0]

    # Copy and open the prediction.
    window.results.copy_button.click()
    first = located[0]
    assert QGuiApplication.clipboard().text() == f"{first.lat:.6f}, {first.lon:.6f}"

    class Catcher(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.urls: list[str] = []

        @Slot(QUrl)
        def handle(self, url: QUrl) -> None:
            self.urls.append(url.toString())

    catcher = Catcher()
    QDesktopServices.setUrlHandler("https", catcher, "handle")
    try:
        window.results.osm_button.click()
    finally:
        QDesktopServices.unsetUrlHandler("https")
    lat, lon = f"{first.lat:.6f}", f"{first.lon:.6f}"
    assert catcher.urls == [
        f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=18/{lat}/{lon}"
    ]

    # Export the session.
    assert window.export_results(str(tmp_path / "session.csv"))
    assert window.export_results(str(tmp_path / "session.geojson"))
    assert len((tmp_path / "session.csv").read_text().splitlines()) == 6
    assert '"FeatureCollection"' in (tmp_path / "session.geojson").read_text()

    # The stall figure is for the log, not a pass mark: it depends on the machine's load.
    worst = window.stalls.worst_ms("locating")
    print(
        f"\nworst GUI stall while locating 5 photos: {worst:.0f} ms; drop to result: "
        + ", ".join(f"{t:.2f}" for t in window.locate_times)
        + " s"
    )
    assert worst > 0  # the meter watched the locating


def test_command_line_photos_are_located(qtbot, lund_index: Path, queries) -> None:
    win = open_window(qtbot, index_dir=str(lund_index), inputs=[str(queries / "14.jpg")])
    qtbot.waitUntil(lambda: len(win.queue.entries()) == 1, timeout=10_000)
    wait_results(qtbot, win, [win.queue.entries()[0].token])
    assert win.queue.entries()[0].state == DONE


def test_first_start_explains_what_to_do(qtbot, queries, tmp_path) -> None:
    win = open_window(qtbot)
    assert win.pages.currentIndex() == 0 and win.welcome.isVisible()
    assert "Choose a folder of geotagged photos" in win.welcome.choose_button.text()
    assert not win.model_banner.isVisible()  # the default model's weights ship with the app

    drop_files(win, [queries / "14.jpg"])  # photos before any library: they wait
    assert "Choose a folder of geotagged photos first" in win.notice.text
    assert win.queue.entries()[0].state == "waiting"

    library = queries.parent / "references"
    drop_files(win, [library])  # a folder on the first-start page becomes the library
    assert win.pages.currentIndex() == 1
    assert win.library == str(library.resolve())
    qtbot.waitUntil(lambda: win.info is not None, timeout=30_000)
    assert not win.info.exists
    assert "Not indexed yet" in win.library_panel.stats_label.text()
    assert win.library_panel.build_button.text() == "Build index"

    # The library panel takes folders; photos dropped on it fall through to the window.
    other = tmp_path / "other library"
    other.mkdir()
    drop_files(win.library_panel, [other])
    assert win.library == str(other.resolve())
    drop_files(win.library_panel, [queries / "02.jpg"])
    assert [e.name for e in win.queue.entries()] == ["14.jpg", "02.jpg"]


def test_settings_and_geometry_persist(qtbot, lund_index: Path) -> None:
    win = open_window(qtbot, index_dir=str(lund_index))
    wait_ready(qtbot, win)
    new = win.settings
    new.top_n = 3
    win.apply_settings(new)
    win.resize(760, 560)  # fits the offscreen screen (restoring clamps to it)
    size = (win.width(), win.height())  # as far as the minimum size allows
    win.close()
    assert QSettings().value("settings/top_n") in (3, "3")

    again = MainWindow(LaunchOptions())
    qtbot.addWidget(again)
    assert again.settings.top_n == 3
    assert again.library == str(Path(win.info.library))  # the last library is reopened,
    assert again.index_dir == str(lund_index.resolve())  # with its index folder
    assert (again.width(), again.height()) == size


def test_missing_weights_are_explained_in_the_window(qtbot, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached ImageNet weights
    store = QSettings()
    store.setValue("settings/model", "resnet18-netvlad")
    store.sync()
    win = open_window(qtbot)
    assert win.model_banner.isVisible()
    text = win.model_banner.text
    assert "No usable weights for resnet18-netvlad" in text and "Settings" in text
