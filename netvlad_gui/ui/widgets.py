"""Small widgets and text helpers that several panels share, so each looks and behaves the same.

`plain_label` (file names can hold markup, so labels never read HTML), a label that elides
instead of widening the window, small drawn icons, the one ETA format, the "path + browse" row
(settings dialog, Retrain panel) and spin/combo box builders.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSettings, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStyle,
    QStyleOptionToolButton,
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


class ElidingLabel(QLabel):
    """One line of plain text that is elided when squeezed, never widening its window.

    ``text()`` stays the whole text (and the tooltip can show it); only the painting is cut,
    in the middle by default so a file name keeps its start and its extension. Its size hint is
    the whole text, its minimum ``min_width``: a layout shrinks it before anything else has to.
    """

    def __init__(
        self,
        text: str = "",
        *,
        mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle,
        min_width: int = 40,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(min_width)
        self._mode = mode
        self.setText(text)

    def minimumSizeHint(self) -> QSize:
        return QSize(self.minimumWidth(), super().minimumSizeHint().height())

    def is_elided(self) -> bool:
        return self.shown_text() != self.text()

    def shown_text(self) -> str:
        """The text as painted: elided to the label's width."""
        width = self.contentsRect().width()
        return self.fontMetrics().elidedText(self.text(), self._mode, max(width, 1))

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        self.style().drawItemText(
            painter,
            self.contentsRect(),
            int(self.alignment()),
            self.palette(),
            self.isEnabled(),
            self.shown_text(),
            QPalette.ColorRole.WindowText,
        )


class Reflow(QWidget):
    """Its widgets side by side when its width allows, else one above the other.

    Its minimum width is the widest widget's (never the sum), so it never widens its window;
    its height follows from the width it gets (height-for-width), so the layout above it
    makes room for the stacked form.
    """

    def __init__(
        self, widgets: list[QWidget], *, stretch: int = 1, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._widgets = list(widgets)
        # The layout sits on an inner widget: a layout on this one would answer the height
        # for a width itself (Qt asks a widget's layout first), in the direction it has now.
        self._inner = QWidget(self)
        self._box = QBoxLayout(QBoxLayout.Direction.LeftToRight, self._inner)
        self._box.setContentsMargins(0, 0, 0, 0)
        for w in self._widgets:
            self._box.addWidget(w, stretch)
        policy = self.sizePolicy()
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)

    @property
    def side_by_side(self) -> bool:
        return self._box.direction() == QBoxLayout.Direction.LeftToRight

    def _shown(self) -> list[QWidget]:
        return [w for w in self._widgets if not w.isHidden()]

    def _fits(self, width: int) -> bool:
        shown = self._shown()
        gaps = self._box.spacing() * max(len(shown) - 1, 0)
        return width >= sum(w.sizeHint().width() for w in shown) + gaps

    def minimumSizeHint(self) -> QSize:
        shown = self._shown()
        width = max((w.minimumSizeHint().width() for w in shown), default=0)
        return QSize(width, self.heightForWidth(width))

    def sizeHint(self) -> QSize:
        shown = self._shown()
        gaps = self._box.spacing() * max(len(shown) - 1, 0)
        width = sum(w.sizeHint().width() for w in shown) + gaps
        return QSize(width, self.heightForWidth(width))

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        shown = self._shown()
        heights = [
            w.heightForWidth(width) if w.hasHeightForWidth() else w.sizeHint().height()
            for w in shown
        ]
        heights = [max(h, w.minimumSizeHint().height()) for h, w in zip(heights, shown)]
        if self._fits(width):
            return max(heights, default=0)
        return sum(heights) + self._box.spacing() * max(len(shown) - 1, 0)

    def resizeEvent(self, event) -> None:
        direction = (
            QBoxLayout.Direction.LeftToRight
            if self._fits(self.width())
            else QBoxLayout.Direction.TopToBottom
        )
        if direction != self._box.direction():
            self._box.setDirection(direction)
            self.updateGeometry()
        self._inner.setGeometry(self.rect())
        super().resizeEvent(event)


ICON_COPY, ICON_OPEN = "copy", "open"


def line_icon(kind: str, colour=None, size: int = 32) -> QIcon:
    """A small outline icon drawn here (no icon theme is needed): ICON_COPY (two sheets) or
    ICON_OPEN (a box with an arrow leaving it: "open elsewhere")."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    pen = QPen(colour if colour is not None else Qt.GlobalColor.black, size / 14)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    u = size / 16
    if kind == ICON_COPY:
        painter.drawRoundedRect(QRectF(2 * u, 5 * u, 8 * u, 9 * u), u, u)
        back = QPainterPath()
        back.moveTo(6 * u, 5 * u)
        back.lineTo(6 * u, 3 * u)
        back.arcTo(QRectF(6 * u, 2 * u, 2 * u, 2 * u), 180, -90)
        back.lineTo(13 * u, 2 * u)
        back.lineTo(14 * u, 2 * u)
        back.lineTo(14 * u, 11 * u)
        back.lineTo(10 * u, 11 * u)
        painter.drawPath(back)
    else:
        box = QPainterPath()
        box.moveTo(7 * u, 3 * u)
        box.lineTo(3 * u, 3 * u)
        box.lineTo(3 * u, 13 * u)
        box.lineTo(13 * u, 13 * u)
        box.lineTo(13 * u, 9 * u)
        painter.drawPath(box)
        painter.drawLine(QPointF(8 * u, 8 * u), QPointF(14 * u, 2 * u))
        painter.drawLine(QPointF(9.5 * u, 2 * u), QPointF(14 * u, 2 * u))
        painter.drawLine(QPointF(14 * u, 2 * u), QPointF(14 * u, 6.5 * u))
    painter.end()
    return QIcon(pixmap)


class ActionButton(QToolButton):
    """A button that shows its words when there is room and only its icon when there is not.

    ``text()`` is always the words (the tooltip says them too), so what it does never depends on
    the window's width; its minimum width is the icon's, so it never widens the window.
    """

    def __init__(self, text: str, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setText(text)
        self.setIcon(icon)
        self.setIconSize(QSize(16, 16))
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(self._width(Qt.ToolButtonStyle.ToolButtonIconOnly))

    @property
    def compact(self) -> bool:
        return self.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly

    def set_compact(self, compact: bool) -> None:
        style = (
            Qt.ToolButtonStyle.ToolButtonIconOnly
            if compact
            else Qt.ToolButtonStyle.ToolButtonTextOnly
        )
        if style != self.toolButtonStyle():
            self.setToolButtonStyle(style)

    def text_width(self) -> int:
        """The width it takes showing its words."""
        return self._width(Qt.ToolButtonStyle.ToolButtonTextOnly)

    def _width(self, style: Qt.ToolButtonStyle) -> int:
        # As QToolButton.sizeHint measures, for either style.
        fm = self.fontMetrics()
        if style == Qt.ToolButtonStyle.ToolButtonIconOnly:
            content = QSize(self.iconSize())
        else:
            content = QSize(
                fm.horizontalAdvance(self.text()) + 2 * fm.horizontalAdvance(" "), fm.height()
            )
        option = QStyleOptionToolButton()
        self.initStyleOption(option)
        option.toolButtonStyle = style
        option.rect.setSize(content)
        size = self.style().sizeFromContents(
            QStyle.ContentsType.CT_ToolButton, option, content, self
        )
        return size.width()


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
