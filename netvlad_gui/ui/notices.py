"""Non-blocking notices and the log window: how warnings and errors reach the user.

Nothing here ever opens a modal box: a notice is a bar inside the window that the user can
close, and every message also lands in the log window (View → Log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QWidget,
)

INFO, WARNING, ERROR = "info", "warning", "error"
_STYLE = {
    INFO: "background: #e7f1fb; border: 1px solid #9cc3e6; color: #123;",
    WARNING: "background: #fff4d6; border: 1px solid #e0b84c; color: #3a2a00;",
    ERROR: "background: #fde8e6; border: 1px solid #e08a80; color: #5a0c05;",
}
INFO_TIMEOUT_MS = 10_000


class NoticeBar(QFrame):
    """A closable message bar. Info notices fade after a while; warnings and errors stay.

    ``action`` is the bar's own button (``actionTriggered``); a notice can bring its own instead
    (``show_notice(..., action="Copy link", on_action=...)``), for as long as it is shown.
    """

    actionTriggered = Signal()

    def __init__(self, parent: QWidget | None = None, *, action: str = "") -> None:
        super().__init__(parent)
        self.setObjectName("noticeBar")
        self.level = INFO
        self._action, self._on_action = action, None
        self.text_label = QLabel()
        self.text_label.setObjectName("noticeText")
        self.text_label.setTextFormat(Qt.TextFormat.PlainText)  # file names can hold markup
        self.text_label.setWordWrap(True)
        self.text_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton(action)
        self.action_button.setVisible(bool(action))
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.text_label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.close_button.clicked.connect(self.hide)
        self.action_button.clicked.connect(self._clicked)
        self.hide()

    @property
    def text(self) -> str:
        return self.text_label.text()

    def show_notice(
        self,
        text: str,
        level: str = INFO,
        *,
        action: str = "",
        on_action: Callable[[], None] | None = None,
    ) -> None:
        self.level = level
        self._on_action = on_action if action else None
        self.action_button.setText(action or self._action)
        self.action_button.setVisible(bool(action or self._action))
        self.setStyleSheet(
            f"#noticeBar {{ {_STYLE.get(level, _STYLE[INFO])} border-radius: 4px; }}"
        )
        self.text_label.setText(text)
        self.show()
        if level == INFO:
            self._timer.start(INFO_TIMEOUT_MS)
        else:
            self._timer.stop()

    def _clicked(self) -> None:
        if self._on_action is not None:
            self._on_action()
        else:
            self.actionTriggered.emit()


class FloatOver(QObject):
    """Keeps ``bar`` floating over the top of the first visible of ``targets`` (the map, else
    the page), following it as it moves and resizes.

    A notice laid out above the work area pushed everything down when it came and back up when
    it went; floating, it moves nothing. ``bar`` must be a child of a widget that holds every
    target (the window's central widget).
    """

    MARGIN = 8
    MAX_WIDTH = 760

    def __init__(self, bar: QWidget, targets: list[QWidget]) -> None:
        super().__init__(bar)
        self.bar, self.targets = bar, targets
        for widget in (bar, *targets):
            widget.installEventFilter(self)

    def place(self) -> None:
        host = self.bar.parentWidget()
        target = next((t for t in self.targets if t.isVisible()), None)
        if host is None or target is None:
            return
        area = QRect(target.mapTo(host, QPoint(0, 0)), target.size())
        width = max(min(area.width() - 2 * self.MARGIN, self.MAX_WIDTH), 120)
        height = (
            self.bar.heightForWidth(width)
            if self.bar.hasHeightForWidth()
            else self.bar.sizeHint().height()
        )
        height = max(height, self.bar.minimumSizeHint().height())
        x = area.x() + (area.width() - width) // 2
        self.bar.setGeometry(x, area.y() + self.MARGIN, width, height)
        self.bar.raise_()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.bar:
            moved = event.type() == QEvent.Type.Show
        else:
            kinds = (QEvent.Type.Resize, QEvent.Type.Move, QEvent.Type.Show, QEvent.Type.Hide)
            moved = event.type() in kinds and self.bar.isVisible()
        if moved:
            QTimer.singleShot(0, self.place)  # once the layouts have settled
        return False


class _Emitter(QObject):
    record = Signal(str, int, str)


class QtLogHandler(logging.Handler):
    """Forwards log records to the GUI thread as ``emitter.record(text, levelno)``."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.emitter = _Emitter()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A warning about a file counts once, however many steps (locate, thumbnail) met it.
            key = str(getattr(record, "file", "") or record.getMessage())
            self.emitter.record.emit(self.format(record), record.levelno, key)
        except RuntimeError:  # the emitter is gone (the window closed)
            pass


class LogView(QPlainTextEdit):
    """The log window's text: read-only, monospace, bounded."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("logView")
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._warned: set[str] = set()

    @property
    def warnings(self) -> int:
        """Distinct warnings: one per file (or per message when it names none)."""
        return len(self._warned)

    def append_line(self, text: str, levelno: int = logging.INFO, key: str = "") -> None:
        if levelno >= logging.WARNING:
            self._warned.add(key or text)
        self.appendPlainText(text)

    def note(self, text: str) -> None:
        self.append_line(time.strftime("%H:%M:%S ") + "INFO    " + text)


class LogDock(QDockWidget):
    """The log window (View → Log): the app's log records, and a status-bar button that counts
    the warnings and opens it. ``detach()`` stops listening (the window is closing)."""

    def __init__(self, parent: QWidget | None = None, logger: str = "netvlad_gui") -> None:
        super().__init__("Log", parent)
        self.setObjectName("logDock")
        self.view = LogView()
        self.setWidget(self.view)
        self.warnings_button = QPushButton()
        self.warnings_button.setFlat(True)
        self.warnings_button.hide()
        self.warnings_button.clicked.connect(self.show)
        self._logger = logging.getLogger(logger)
        self._handler = QtLogHandler()
        self._handler.emitter.record.connect(self._on_record)
        self._logger.addHandler(self._handler)
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)

    def detach(self) -> None:
        self._logger.removeHandler(self._handler)

    def _on_record(self, text: str, levelno: int, key: str = "") -> None:
        self.view.append_line(text, levelno, key)
        n = self.view.warnings
        if n:
            self.warnings_button.setText(f"⚠ {n} warning{'s' if n > 1 else ''}")
            self.warnings_button.show()
