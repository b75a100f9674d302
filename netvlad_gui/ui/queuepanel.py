"""The queue of dropped photos: one entry per photo, its state, and which one is shown."""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core.query import wording
from netvlad_gui.core.query.result import LocateResult
from netvlad_gui.core.query.verdict import LOCATED

from .mapdata import format_distance
from .thumbnails import ThumbnailLoader
from .verdictstyle import verdict_colour
from .widgets import plain_label

WAITING, DONE, FAILED = "waiting", "done", "failed"
ICON = QSize(56, 42)
ROW_LINES = 3
_tokens = itertools.count(1)


@dataclass
class Entry:
    """One photo of the session and what became of it."""

    token: int
    path: str
    state: str = WAITING
    result: LocateResult | None = None
    error: str = ""
    label: str = ""  # the name, with its folder when another photo of the list has the same name
    stale: bool = False  # located against another library: listed, never shown as current

    @property
    def verifying(self) -> bool:
        """Shown from a provisional stage: its evidence is still being checked."""
        return self.result is not None and self.result.provisional

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def status_line(self) -> str:
        """The row's status on one line (its tooltip, and the log)."""
        return " · ".join(part for part in self.status_lines() if part)

    def status_lines(self) -> tuple[str, str]:
        """The row's two status lines: what became of the photo, then its figures (confidence
        first: the row is elided at its right edge) or why it failed."""
        if self.stale:
            return "from another library", "locate again"
        if self.state == WAITING:
            return "waiting…", ""
        if self.state == FAILED:
            return "Cannot locate", self.error
        res = self.result
        if res is None:
            return "", ""
        kind = wording.coordinates_kind(res)
        if kind == wording.FIRST_GUESS:  # no verdict and no figures until the evidence is in
            return "verifying…", ""
        verdict = wording.headline(res, short=True)
        if kind == wording.NO_PLACE:
            return verdict or "Not in library", "no match with GPS"
        if kind == wording.GUESS:  # the nearest guess is no answer: no radius, no error
            return verdict, ""
        text = f"{res.confidence * 100:.0f} % · ±{format_distance(res.radius_m)}"
        if res.error_m is not None:
            text += f" · {format_distance(res.error_m)} off"
        return verdict, text


class QueuePanel(QGroupBox):
    """Lists the session's photos; ``currentChanged(token)`` when the user picks one."""

    currentChanged = Signal(int)
    relocateRequested = Signal()  # "Locate again": the photos from another library

    def __init__(self, thumbs: ThumbnailLoader, parent: QWidget | None = None) -> None:
        super().__init__("Photos", parent)
        self._thumbs = thumbs
        self._entries: dict[int, Entry] = {}
        self._items: dict[int, QListWidgetItem] = {}
        self.list = QListWidget()
        self.list.setObjectName("queueList")
        self.list.setIconSize(ICON)
        self.list.setUniformItemSizes(True)  # with a fixed row height: rows never squeeze
        self.list.setWordWrap(False)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Forget the photos of this session")
        self.clear_button.setEnabled(False)
        self.relocate_button = QPushButton("Locate again")
        self.relocate_button.setToolTip(
            "Locate the photos marked “from another library” against the current library"
        )
        self.relocate_button.hide()
        self.empty = plain_label(
            "Drop photos or a folder anywhere on the window, or use File → Open photos…"
        )
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: gray;")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.list)
        layout = QVBoxLayout(self)
        layout.addWidget(self.stack)
        row = QHBoxLayout()
        row.addWidget(self.relocate_button)
        row.addStretch(1)
        row.addWidget(self.clear_button)
        layout.addLayout(row)
        self.list.currentItemChanged.connect(self._on_current)
        self.clear_button.clicked.connect(self.clear)
        self.relocate_button.clicked.connect(self.relocateRequested)
        thumbs.loaded.connect(self._on_thumbnail)

    # ---- the session ---------------------------------------------------------------------

    def add(self, paths: list[str]) -> list[Entry]:
        """Append photos (each gets a fresh token) and return their entries; a photo already in
        the list is not added again (see ``find``)."""
        added = []
        for path in paths:
            if self.find(str(path)) is not None:
                continue
            entry = Entry(next(_tokens), str(path))
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, entry.token)
            item.setSizeHint(QSize(0, self._row_height()))
            self._entries[entry.token] = entry
            self._items[entry.token] = item
            self.list.addItem(item)
            self._refresh(entry)
            image = self._thumbs.request(entry.path)
            if image is not None:
                self._set_icon(item, image)
            added.append(entry)
        self._update_labels()
        self._update_empty()
        return added

    def entry(self, token: int) -> Entry | None:
        return self._entries.get(token)

    def find(self, path: str) -> Entry | None:
        """The entry of this photo (the same path) if it is in the list."""
        return next((e for e in self._entries.values() if e.path == path), None)

    def mark_stale(self, tokens: list[int]) -> None:
        """These results were located against another library (see ``Entry.stale``)."""
        for token in tokens:
            entry = self._entries.get(token)
            if entry is not None:
                entry.stale = True
                self._refresh(entry)
        self._update_empty()

    def requeue(self, tokens: list[int]) -> list[Entry]:
        """Forget these photos' results: they wait to be located again."""
        out = []
        for token in tokens:
            entry = self._entries.get(token)
            if entry is not None:
                entry.state, entry.result, entry.error, entry.stale = WAITING, None, "", False
                self._refresh(entry)
                out.append(entry)
        self._update_empty()
        return out

    def entries(self) -> list[Entry]:
        return [
            self._entries[self.list.item(i).data(Qt.ItemDataRole.UserRole)]
            for i in range(self.list.count())
        ]

    def waiting(self) -> list[Entry]:
        return [e for e in self.entries() if e.state == WAITING]

    def results(self) -> list[LocateResult]:
        """Every finished photo's result, failures included (they carry ``error``); results
        from another library are left out (they answer a question about other photos)."""
        out = []
        for e in self.entries():
            if e.stale:
                continue
            if e.state == DONE and e.result is not None:
                out.append(e.result)
            elif e.state == FAILED:
                out.append(e.result or LocateResult(query=e.path, error=e.error))
        return out

    def set_result(self, token: int, result: LocateResult) -> Entry | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        entry.result = result
        entry.state = FAILED if result.error else DONE
        entry.error = result.error
        self._refresh(entry)
        return entry

    def current(self) -> Entry | None:
        item = self.list.currentItem()
        return None if item is None else self._entries.get(item.data(Qt.ItemDataRole.UserRole))

    def set_current(self, token: int) -> None:
        item = self._items.get(token)
        if item is not None:
            self.list.setCurrentItem(item)

    def position(self) -> tuple[int, int]:
        """(1-based position of the current photo, number of photos)."""
        return self.list.currentRow() + 1, self.list.count()

    def step(self, delta: int) -> None:
        if not self.list.count():
            return
        row = min(max(self.list.currentRow() + delta, 0), self.list.count() - 1)
        self.list.setCurrentRow(row)

    def clear(self) -> None:
        self._entries.clear()
        self._items.clear()
        self.list.clear()
        self._update_empty()
        self.currentChanged.emit(0)

    # ---- internals -------------------------------------------------------------------------

    def _update_empty(self) -> None:
        self.clear_button.setEnabled(bool(self._entries))
        self.relocate_button.setVisible(any(e.stale for e in self._entries.values()))
        self.stack.setCurrentIndex(1 if self._entries else 0)

    def _row_height(self) -> int:
        """Thumbnail or three text lines (name, verdict, figures), whichever is taller, plus a
        margin."""
        return max(ICON.height(), ROW_LINES * self.list.fontMetrics().lineSpacing()) + 8

    def _update_labels(self) -> None:
        """Photos with the same name from different folders show their parent folder."""
        by_name: dict[str, list[Entry]] = {}
        for e in self._entries.values():
            by_name.setdefault(e.name, []).append(e)
        for same in by_name.values():
            for e in same:
                parent = Path(e.path).parent.name
                label = f"{parent}/{e.name}" if len(same) > 1 and parent else e.name
                if label != e.display_name:
                    e.label = label
                    self._refresh(e)

    def _refresh(self, entry: Entry) -> None:
        item = self._items[entry.token]
        # Each line is elided to the list's width; the tooltip has them in full.
        item.setText("\n".join([entry.display_name, *entry.status_lines()]))
        item.setToolTip(html.escape(f"{entry.path}\n{entry.status_line()}").replace("\n", "<br>"))
        if entry.stale:
            item.setForeground(Qt.GlobalColor.gray)
        elif entry.state == FAILED:
            item.setForeground(Qt.GlobalColor.darkRed)
        else:
            colour = verdict_colour(entry.result.verdict) if entry.result is not None else None
            if entry.result is not None and entry.result.verdict == LOCATED:
                colour = None  # the ordinary text colour: "located" needs no alarm
            if colour is not None:
                item.setForeground(QBrush(colour))
            else:  # unset, not an empty brush: the palette's text colour
                item.setData(Qt.ItemDataRole.ForegroundRole, None)

    def _set_icon(self, item: QListWidgetItem, image: QImage) -> None:
        pixmap = QPixmap.fromImage(image).scaled(
            ICON, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        item.setIcon(QIcon(pixmap))

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        for token, entry in self._entries.items():
            if entry.path == path:
                self._set_icon(self._items[token], image)

    def _on_current(self, current: QListWidgetItem | None, _previous) -> None:
        self.currentChanged.emit(0 if current is None else current.data(Qt.ItemDataRole.UserRole))
