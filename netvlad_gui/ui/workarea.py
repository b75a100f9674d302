"""The window's work area: library and photo list on the left, the map over the results."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget


def column(widgets: list[QWidget]) -> QWidget:
    """The window's central widget: banners over the page; the last widget takes the room."""
    out = QWidget()
    layout = QVBoxLayout(out)
    layout.setContentsMargins(6, 6, 6, 6)
    for w in widgets:
        layout.addWidget(w, 1 if w is widgets[-1] else 0)
    return out


class WorkArea(QSplitter):
    """Left column | (map over results). ``right`` is the vertical splitter, whose sizes the
    window saves with its own (see ``widgets.save_window_state``)."""

    def __init__(
        self, library_panel: QWidget, queue: QWidget, map_view: QWidget, results: QWidget
    ) -> None:
        super().__init__(Qt.Orientation.Horizontal)
        self.setObjectName("mainSplitter")
        map_view.setMinimumHeight(260)
        results.setMinimumHeight(250)
        # A plain column, not a splitter: the library panel grows and shrinks with its content
        # (progress, stats) and the photo queue takes the rest.
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(library_panel)
        column.addWidget(queue, 1)
        self.right = QSplitter(Qt.Orientation.Vertical)
        self.right.setObjectName("rightSplitter")
        self.right.addWidget(map_view)
        self.right.addWidget(results)
        self.right.setStretchFactor(0, 1)
        self.right.setStretchFactor(1, 0)
        self.right.setSizes([560, 260])
        self.right.setChildrenCollapsible(False)
        self.addWidget(left)
        self.addWidget(self.right)
        self.setStretchFactor(1, 1)
        self.setSizes([250, 1030])
        self.setChildrenCollapsible(False)
