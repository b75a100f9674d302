"""Small widgets and text helpers that several panels share, so each looks and behaves the same.

`plain_label` (file names can hold markup, so labels never read HTML), the one ETA format, the
"path + browse" row (settings dialog, Retrain panel) and spin/combo box builders.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSpinBox,
    QSplitter,
    QToolButton,
    QWidget,
)

FILE, FOLDER = "file", "folder"


def plain_label(text: str = "", *, wrap: bool = True) -> QLabel:
    """A QLabel that never interprets its text as HTML (file names can hold markup)."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    label.setText(text)
    return label


def dropped_paths(mime) -> list[str]:
    """The local files and folders a drag carries (QMimeData), in order; [] for anything else."""
    if not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]


def format_eta(seconds: float) -> str:
    """Time left as m:ss, or h:mm:ss from an hour on (the one ETA format of the app)."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class EtaClock:
    """Time left in a stage from its rate so far (None until there is a rate)."""

    def __init__(self) -> None:
        self.stage = ""
        self.t0 = 0.0
        self.d0 = 0

    def update(self, stage: str, done: int, total: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if stage != self.stage or done < self.d0:
            self.stage, self.t0, self.d0 = stage, now, done
            return None
        if done <= self.d0 or now <= self.t0:
            return None
        rate = (done - self.d0) / (now - self.t0)
        return (total - done) / rate


def spin_box(
    lo: int, hi: int, value: int, tip: str = "", *, step: int = 1, suffix: str = ""
) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setSuffix(suffix)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def double_spin_box(
    lo: float, hi: float, value: float, decimals: int = 2, step: float = 0.1, tip: str = ""
) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)  # before the range and value, which it rounds
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def combo_box(items: list[tuple[str, str]], tip: str = "") -> QComboBox:
    """A combo of (data, text) items."""
    box = QComboBox()
    for value, text in items:
        box.addItem(text, value)
    box.setToolTip(tip)
    return box


class PathRow(QWidget):
    """A path field with a browse button that fills it from a file or folder dialog.

    ``editor`` is the field: a QLineEdit by default, or an editable QComboBox (a model name or a
    checkpoint file). ``browsed(path)`` is emitted after the user picked a path in the dialog.
    """

    browsed = Signal(str)

    def __init__(
        self,
        title: str,
        *,
        mode: str = FOLDER,
        file_filter: str = "",
        button_text: str = "…",
        editor: QLineEdit | QComboBox | None = None,
        text: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.title, self.mode, self.file_filter = title, mode, file_filter
        self.editor = editor if editor is not None else QLineEdit()
        if button_text == "…":
            self.button: QToolButton | QPushButton = QToolButton()
            self.button.setText(button_text)
        else:
            self.button = QPushButton(button_text)
        self.button.setToolTip(title)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.button)
        if text:
            self.setText(text)
        self.button.clicked.connect(self.browse)

    def text(self) -> str:
        if isinstance(self.editor, QComboBox):
            return self.editor.currentText()
        return self.editor.text()

    def setText(self, text: str) -> None:
        if isinstance(self.editor, QComboBox):
            self.editor.setCurrentText(text)
        else:
            self.editor.setText(text)

    def browse(self) -> None:
        start = self.text().strip()
        if self.mode == FOLDER:
            path = QFileDialog.getExistingDirectory(self, self.title, start or str(Path.home()))
        else:
            if start and not Path(start).expanduser().exists():
                start = ""  # a model name, not a path: start in the dialog's default folder
            path, _ = QFileDialog.getOpenFileName(self, self.title, start, self.file_filter)
        if path:
            self.setText(path)
            self.browsed.emit(path)


def restore_window_state(
    window: QMainWindow, splitters: list[QSplitter], default_size: tuple[int, int]
) -> None:
    """Size, docks and splitter positions as the user left them (QSettings ``window/…``)."""
    store = QSettings()
    geometry = store.value("window/geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    else:
        window.resize(*default_size)
    state = store.value("window/state")
    if state is not None:
        window.restoreState(state)
    for splitter in splitters:
        value = store.value(f"window/{splitter.objectName()}")
        if value is not None:
            splitter.restoreState(value)


def save_window_state(window: QMainWindow, splitters: list[QSplitter]) -> None:
    store = QSettings()
    store.setValue("window/geometry", window.saveGeometry())
    store.setValue("window/state", window.saveState())
    for splitter in splitters:
        store.setValue(f"window/{splitter.objectName()}", splitter.saveState())
    store.sync()
