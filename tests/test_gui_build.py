"""Building the index from the window: progress signals, cancel, a usable index, failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _gui import (
    GuiPing,
    delete_later,  # noqa: F401 - fixture
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    wait_results,
)
from _library import make_library
from PySide6.QtCore import Qt

from netvlad_gui.core.library.index import LibraryIndex
from netvlad_gui.core.paths import default_index_dir
from netvlad_gui.ui.queuepanel import DONE

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")

BUILD_TIMEOUT_MS = 180_000
N = 24  # photos in the synthetic library: three extraction batches of 8
IMAGE_SIZE = 160  # tiny photos: the test is about the plumbing, not the features


def test_build_reports_progress_cancel_keeps_a_usable_index(qtbot, tmp_path: Path) -> None:
    library = tmp_path / "library"
    photos = make_library(library, N, size=96)
    win = open_window(qtbot, library=str(library), image_size=IMAGE_SIZE)
    qtbot.waitUntil(lambda: win.info is not None, timeout=30_000)
    assert win.library_panel.build_button.text() == "Build index"

    # The engine thread reports progress; this callback runs there (a direct connection) and
    # holds the build at its first extraction batch until the GUI thread has clicked Cancel.
    # Mid-extraction it also asks the GUI thread for an answer: the window stays responsive.
    stages: list[tuple[str, int, int]] = []
    reached, clicked = threading.Event(), threading.Event()
    ping, answered = GuiPing(), []

    def on_progress(stage: str, done: int, total: int) -> None:
        stages.append((stage, done, total))
        if stage == "extract" and done > 0 and not reached.is_set():
            answered.append(ping.ask())
            reached.set()
            clicked.wait(60)

    win.engine.progress.connect(on_progress, Qt.ConnectionType.DirectConnection)
    assert win.library_panel.build_button.isEnabled()
    with qtbot.waitSignal(win.buildEnded, timeout=BUILD_TIMEOUT_MS) as ended:
        win.library_panel.build_button.click()
        assert win.library_panel.cancel_button.isEnabled()
        assert win.library_panel.progress_bar.isVisible()
        qtbot.waitUntil(reached.is_set, timeout=BUILD_TIMEOUT_MS)
        win.library_panel.cancel_button.click()  # as the user would, from the GUI thread
        clicked.set()
    summary = ended.args[0]
    win.engine.progress.disconnect(on_progress)
    assert answered == [True]  # the GUI thread ran while the engine was extracting
    assert threading.main_thread().ident not in ping.ask_threads  # the build ran off it
    assert ping.answer_threads == {threading.main_thread().ident}
    assert {s for s, _, _ in stages} >= {"scan", "init", "extract"}
    assert all(total == N for s, _, total in stages if s in ("scan", "extract"))
    assert summary.cancelled and 0 < summary.indexed < N
    assert not win.library_panel.cancel_button.isEnabled()
    assert "cancelled" in win.notice.text

    # The cancelled index is consistent and searchable: photos can be located at once.
    qtbot.waitUntil(lambda: win.info is not None and win.info.ready, timeout=60_000)
    assert win.info.indexed == summary.indexed and win.info.pending == N - summary.indexed
    assert "not indexed yet" in win.library_panel.stats_label.text()
    tokens = win.open_inputs([str(photos[0])])
    wait_results(qtbot, win, tokens)
    assert win.queue.entry(tokens[0]).state == DONE
    assert win.queue.entry(tokens[0]).result.matches

    # "Update index" finishes the rest without redoing the first part.
    assert win.library_panel.build_button.text() == "Update index"
    with qtbot.waitSignal(win.buildEnded, timeout=BUILD_TIMEOUT_MS) as ended:
        win.library_panel.build_button.click()
    again = ended.args[0]
    assert not again.cancelled and again.indexed == N
    assert again.extracted == N - summary.indexed
    qtbot.waitUntil(lambda: win.info is not None and win.info.indexed == N, timeout=60_000)
    assert f"{N} indexed · {N} with GPS · 0 skipped" in win.library_panel.stats_label.text()
    index = LibraryIndex(default_index_dir(library))  # in the isolated user data folder
    try:
        assert index.stats().indexed == N
    finally:
        index.close()
    # A figure for the log, not a pass mark: it depends on the machine's load.
    print(f"\nworst GUI stall while indexing: {win.stalls.worst_ms('indexing'):.0f} ms")
    assert win.stalls.worst_ms("indexing") > 0  # the meter watched the build


def test_a_failing_build_is_a_notice_not_a_crash(qtbot, tmp_path: Path) -> None:
    library = tmp_path / "library"
    make_library(library, 4, size=64)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"this is not a torch file")
    win = open_window(qtbot, library=str(library))
    settings = win.settings
    settings.backbone_weights = str(bad)
    win.apply_settings(settings)
    qtbot.waitUntil(lambda: win.info is not None, timeout=30_000)
    with qtbot.waitSignal(win.buildEnded, timeout=BUILD_TIMEOUT_MS) as ended:
        win.build_index()
    assert ended.args[0] is None
    assert win.notice.isVisible() and win.notice.level == "error"
    assert "Indexing failed" in win.notice.text and "weights.pth" in win.notice.text
    assert win.library_panel.build_button.isEnabled()  # ready to try again


def test_stats_list_the_skipped_photos_with_reasons(qtbot, tmp_path: Path) -> None:
    from netvlad_gui.ui.librarypanel import SkippedDialog

    library = tmp_path / "library"
    photos = make_library(library, 6, size=96)
    (library / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg" * 20)
    (library / "no_gps.jpg").write_bytes(photos[0].read_bytes())  # not in gps.csv
    win = open_window(qtbot, library=str(library), image_size=IMAGE_SIZE)
    qtbot.waitUntil(lambda: win.info is not None, timeout=30_000)
    with qtbot.waitSignal(win.buildEnded, timeout=BUILD_TIMEOUT_MS):
        win.build_index()
    qtbot.waitUntil(lambda: win.info is not None and win.info.ready, timeout=60_000)
    assert "7 indexed · 6 with GPS · 1 skipped" in win.library_panel.stats_label.text()
    assert win.library_panel.skipped_button.isVisible()
    dialog = SkippedDialog(win.info.failures, win.info.no_gps)
    qtbot.addWidget(dialog)
    rows = {
        dialog.tree.topLevelItem(i).text(0): dialog.tree.topLevelItem(i).text(1)
        for i in range(dialog.tree.topLevelItemCount())
    }
    assert set(rows) == {"broken.jpg", "no_gps.jpg"}
    assert rows["broken.jpg"].startswith("not indexed: ")
    assert rows["no_gps.jpg"].startswith("no GPS")


def test_quitting_during_a_build_waits_for_the_worker(qtbot, tmp_path: Path) -> None:
    library = tmp_path / "library"
    make_library(library, N, size=96)
    win = open_window(qtbot, library=str(library), image_size=IMAGE_SIZE)
    qtbot.waitUntil(lambda: win.info is not None, timeout=30_000)
    with qtbot.waitSignal(
        win.engine.progress,
        timeout=BUILD_TIMEOUT_MS,
        check_params_cb=lambda stage, done, total: stage == "init",
    ):
        win.build_index()
    win.close()  # cancels the build and waits for the engine thread
    assert win._engine_thread.thread.isFinished()
    index = LibraryIndex(default_index_dir(library))  # consistent: it opens and counts
    try:
        stats = index.stats()
        assert stats.indexed + stats.pending + stats.failed == N
    finally:
        index.close()


def test_progress_label_names_the_stage_and_counts_only_photos(qtbot) -> None:
    from netvlad_gui.ui.librarypanel import LibraryPanel

    panel = LibraryPanel()
    qtbot.addWidget(panel)
    panel.set_busy(True)
    panel.on_progress("model", 0, 1)  # seconds of loading torch: a name, not "0 of 1"
    assert panel.progress_label.text() == "Loading the model…"
    panel.on_progress("init", 3, 24)
    assert panel.progress_label.text().startswith("Fitting NetVLAD to your photos: 3 of 24")
    panel.on_progress("finalize", 0, 1)
    assert panel.progress_label.text() == "Finishing…"
