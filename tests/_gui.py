"""Helpers for the GUI tests: isolated QSettings, windows on the shared index, real drops."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lund import TEST_IMAGE_SIZE

pytest.importorskip("PySide6.QtWebEngineWidgets", reason="QtWebEngine is not available")

from PySide6.QtCore import (
    QCoreApplication,
    QEvent,
    QMimeData,
    QObject,
    QPointF,
    QSettings,
    Qt,
    QUrl,
    Signal,
    Slot,
)
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

from netvlad_gui.core import paths
from netvlad_gui.ui.mainwindow import LaunchOptions, MainWindow

READY_TIMEOUT_MS = 120_000
LOCATE_TIMEOUT_MS = 120_000


@pytest.fixture
def isolated_settings(qapp, tmp_path, monkeypatch) -> Iterator[Path]:
    """QSettings in tmp_path under a throw-away organisation; user data and cache there too."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings")
    )
    old_org, old_app = QCoreApplication.organizationName(), QCoreApplication.applicationName()
    QCoreApplication.setOrganizationName(f"netvlad-gui-test-{uuid.uuid4().hex[:8]}")
    QCoreApplication.setApplicationName("netvlad-gui")
    monkeypatch.setattr(paths, "data_dir", lambda: tmp_path / "data")
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache")
    store = QSettings()
    store.setValue("settings/image_size", TEST_IMAGE_SIZE)
    store.sync()
    yield tmp_path
    QCoreApplication.setOrganizationName(old_org)
    QCoreApplication.setApplicationName(old_app)


@pytest.fixture
def delete_later() -> Iterator[None]:
    """Really delete closed windows (pytest-qt only schedules it), pages before the profile."""
    yield
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


class GuiPing(QObject):
    """Asks the GUI thread for an answer from a worker thread and waits for it.

    ``ask()`` in the engine thread, in the middle of a job, returns True once the GUI thread's
    event loop has run the answer: it keeps running while the engine works, however loaded the
    machine (a job on the GUI thread would never get an answer). Make it in the GUI thread.
    """

    _asked = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._answered = threading.Event()
        self.answer_threads: set[int] = set()
        self.ask_threads: set[int] = set()
        self._asked.connect(self._answer)  # queued when emitted from another thread

    def ask(self, timeout_s: float = 60.0) -> bool:
        self.ask_threads.add(threading.get_ident())
        if threading.current_thread() is threading.main_thread():
            return False  # the job runs on the GUI thread: nobody else can answer
        self._answered.clear()
        self._asked.emit()
        return self._answered.wait(timeout_s)

    @Slot()
    def _answer(self) -> None:
        self.answer_threads.add(threading.get_ident())
        self._answered.set()


def open_window(qtbot, **options: Any) -> MainWindow:
    window = MainWindow(LaunchOptions(**options))
    qtbot.addWidget(window)  # closed (workers stopped) at the end of the test
    window.resize(1200, 800)
    window.show()
    return window


def wait_ready(qtbot, window: MainWindow) -> None:
    """Until the index is open for locating and the map page can take calls."""
    qtbot.waitUntil(lambda: window.info is not None and window.info.ready, timeout=READY_TIMEOUT_MS)
    qtbot.waitUntil(lambda: window.map.is_ready, timeout=READY_TIMEOUT_MS)


def wait_results(qtbot, window: MainWindow, tokens: list[int]) -> None:
    """Until every photo has its final result (verified, when verification is on)."""

    def done() -> bool:
        entries = [window.queue.entry(t) for t in tokens]
        return all(e.state != "waiting" and not e.verifying for e in entries)

    qtbot.waitUntil(done, timeout=LOCATE_TIMEOUT_MS)


def drop_files(target: QWidget, files: list[Path | str]) -> bool:
    """A real drag-enter + drop carrying file URLs, sent to ``target``; returns drop accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    centre = target.rect().center()
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(target, enter)
    drop = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(target, drop)
    return drop.isAccepted()


def run_js(qtbot, window: MainWindow, expression: str) -> Any:
    """Evaluate a JS expression in the map page (as JSON: PySide returns objects as '')."""
    with qtbot.waitCallback(timeout=10_000) as callback:
        window.map.page().runJavaScript(f"JSON.stringify({expression})", 0, callback)
    text = callback.args[0]
    return None if text in (None, "") else json.loads(text)
