"""The match viewer: the query and one reference side by side, with the evidence between them.

Geometric verification (core/query/verify.py) gives each checked match its inlier correspondences,
in pixels of the photos as displayed (EXIF orientation applied, full resolution, continuous
coordinates as QPainter draws). The scene lays both photos out at one height in those
coordinates scaled, so each inlier is a straight line from the query to the reference. Photos
are decoded off the GUI thread; the lines are drawn at once from the photos' headers.

Keys: Left/Right step through the matches, Escape closes, +/- zoom, 0 or F fits; the wheel
zooms under the pointer and dragging pans.
"""

from __future__ import annotations

import html
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QThreadPool, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QKeyEvent, QPainter, QPen, QPixmap, QTransform
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core.config import VerifyConfig
from netvlad_gui.core.query import wording
from netvlad_gui.core.query.verify import oriented_size

from .mapdata import format_distance
from .thumbnails import ImageJob, ImageSignals
from .widgets import plain_label

log = logging.getLogger(__name__)

VIEW_SIZE = 1600  # longer side photos are decoded at for the viewer (zooming in stays sharp)
ROW_HEIGHT = 1000.0  # both photos are drawn this tall, in scene units
GAP = 40.0  # between the two photos
CACHE = 12  # decoded photos kept (the query and a result's matches)
ZOOM_STEP = 1.25
PASS_UP = (Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Escape)


class ZoomView(QGraphicsView):
    """A view that fits its scene until the user zooms (wheel, under the pointer) or pans."""

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setObjectName("matchView")
        self.setRenderHints(
            QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform
        )
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QBrush(QColor("#202020")))
        self.fitted = True

    def fit(self) -> None:
        self.fitted = True
        self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        self.fitted = False
        self.scale(factor, factor)

    def zoom_level(self) -> float:
        return float(self.transform().m11())

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom(ZOOM_STEP**steps)
        event.accept()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.fitted:
            self.fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in PASS_UP:  # the viewer's keys, not scrolling
            event.ignore()
            return
        super().keyPressEvent(event)


class MatchViewer(QDialog):
    """Query | reference, large and zoomable, with the inlier correspondences as lines.

    ``show_entry(entry, rank)`` shows one match of a ui.queuepanel.Entry; ``rankChanged(rank)``
    when the user steps to another match.
    """

    rankChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("matchViewer")
        self.setWindowTitle("Match")
        self.setModal(False)
        self._pool = QThreadPool(self)  # made first: deleted (and waited for) before _signals
        self._pool.setMaxThreadCount(2)
        self._signals = ImageSignals(self)
        self._signals.done.connect(self._on_loaded)
        self._signals.error.connect(self._on_failed)
        self._images: OrderedDict[str, QImage] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._pending: set[str] = set()
        self._entry = None
        self._index = 0
        self._frames: list[tuple[str, QGraphicsRectItem]] = []  # (path, its frame): query, ref
        self.lines: list[QGraphicsLineItem] = []
        self._dots: list[QGraphicsItem] = []

        self.heading = plain_label(wrap=False)
        self.heading.setObjectName("viewerHeading")
        font = self.heading.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.1)
        self.heading.setFont(font)
        self.info = plain_label()
        self.info.setObjectName("viewerInfo")
        self.note = plain_label()
        self.note.setObjectName("viewerNote")
        self.note.setStyleSheet("color: #b35c00;")
        self.scene = QGraphicsScene(self)
        self.view = ZoomView(self.scene, self)
        self.prev_button = QPushButton("◀ Previous")
        self.prev_button.setToolTip("Previous match (Left arrow)")
        self.next_button = QPushButton("Next ▶")
        self.next_button.setToolTip("Next match (Right arrow)")
        self.show_lines = QCheckBox("Show matching points")
        self.show_lines.setChecked(True)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit both photos in the window (0 or F); the wheel zooms")
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close (Escape)")
        for button in (self.prev_button, self.next_button, self.fit_button, self.close_button):
            button.setAutoDefault(False)  # Enter must not close the viewer
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        row = QHBoxLayout()
        row.addWidget(self.prev_button)
        row.addWidget(self.next_button)
        row.addSpacing(12)
        row.addWidget(self.show_lines)
        row.addStretch(1)
        row.addWidget(self.fit_button)
        row.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.info)
        layout.addWidget(self.note)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)

        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.fit_button.clicked.connect(self.view.fit)
        self.close_button.clicked.connect(self.reject)
        self.show_lines.toggled.connect(self._set_lines_visible)
        self.resize(1200, 720)
        self.view.setFocus()

    # ---- what is shown -----------------------------------------------------------------------

    @property
    def rank(self) -> int | None:
        m = self.match
        return None if m is None else m.rank

    @property
    def match(self):
        matches = self._matches()
        return matches[self._index] if 0 <= self._index < len(matches) else None

    def show_entry(self, entry, rank: int) -> None:
        """Show match ``rank`` of ``entry`` (a queue Entry with a result)."""
        self._entry = entry
        ranks = [m.rank for m in self._matches()]
        self._index = ranks.index(rank) if rank in ranks else 0
        self._show()

    def update_entry(self, entry) -> None:
        """The shown photo's result changed (refined): stay on the same reference if it is
        still among the matches. Another photo's entry is ignored."""
        if self._entry is None or entry.path != self._entry.path:
            return
        current = self.match
        self._entry = entry
        paths = [m.path for m in self._matches()]
        if current is not None and current.path in paths:
            self._index = paths.index(current.path)
        self._index = min(self._index, max(len(paths) - 1, 0))
        self._show(keep_zoom=True)

    def step(self, delta: int) -> None:
        n = len(self._matches())
        index = min(max(self._index + delta, 0), n - 1)
        if n and index != self._index:
            self._index = index
            self._show()
            self.rankChanged.emit(int(self.match.rank))

    # ---- keys ----------------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Left:
            self.step(-1)
        elif key == Qt.Key.Key_Right:
            self.step(1)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.view.zoom(ZOOM_STEP)
        elif key == Qt.Key.Key_Minus:
            self.view.zoom(1 / ZOOM_STEP)
        elif key in (Qt.Key.Key_0, Qt.Key.Key_F):
            self.view.fit()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()  # not QDialog's "accept and close"
        else:
            super().keyPressEvent(event)  # Escape closes

    # ---- internals -------------------------------------------------------------------------

    def _matches(self) -> list:
        res = None if self._entry is None else self._entry.result
        return list(res.matches) if res is not None else []

    def _show(self, *, keep_zoom: bool = False) -> None:
        m = self.match
        res = self._entry.result if self._entry is not None else None
        self.scene.clear()
        self._frames = []
        self.lines, self._dots = [], []
        if m is None or res is None:
            self.heading.setText("No matches")
            self.info.clear()
            self.note.clear()
            return
        n = len(self._matches())
        name = Path(m.path).name
        where = "prediction" if wording.coordinates_kind(res) == wording.ANSWER else "guess"
        dist = (
            f"{format_distance(m.distance_m)} from the {where}"
            if m.distance_m is not None
            else "no GPS"
        )
        evidence = f"{m.inliers} inliers" if m.inliers is not None else "not verified"
        self.heading.setText(f"Match #{m.rank} of {n}: {name}")
        self.setWindowTitle(f"Match #{m.rank}: {name} — {evidence} · {dist}")
        self.info.setText(
            f"{Path(self._entry.path).name} (left)  ↔  {name} (right) · {evidence} · {dist} · "
            f"global score {m.score:.3f} (#{m.score_rank or m.rank} by score)"
        )
        self.info.setToolTip(html.escape(f"{self._entry.path}\n{m.path}").replace("\n", "<br>"))
        self.prev_button.setEnabled(self._index > 0)
        self.next_button.setEnabled(self._index < n - 1)

        q_rect = self._place(self._entry.path, 0.0)
        r_rect = self._place(m.path, q_rect.right() + GAP)
        self.scene.setSceneRect(
            QRectF(q_rect.topLeft(), r_rect.bottomRight()).adjusted(-10, -10, 10, 10)
        )
        self.note.setText(self._note(m, res))
        self.note.setVisible(bool(self.note.text()))
        if m.inliers and m.query_xy is not None and m.ref_xy is not None and len(m.query_xy):
            self._draw_lines(m.query_xy, m.ref_xy, q_rect, r_rect)
        self._set_lines_visible(self.show_lines.isChecked())
        if not keep_zoom or self.view.fitted:
            self.view.fit()

    def _note(self, m, res) -> str:
        """Why there are no lines (empty when there are)."""
        if m.inliers is None:
            if self._entry.verifying:
                return "Not verified yet: verification is running…"
            if not res.verified:
                return (
                    "Not verified — verification is off (Tools → Model and settings) or was "
                    "stopped: no matching points to show."
                )
            checked = [x.score_rank for x in res.matches if x.inliers is not None]
            if checked and m.score_rank > max(checked):
                return (
                    f"Not verified — verification ran on the top K only (this match was "
                    f"#{m.score_rank} by global score)."
                )
            return "Not verified — its photo could not be read for verification."
        if m.inliers == 0 or m.query_xy is None or not len(m.query_xy):
            return "No geometrically consistent points: nothing shows these are the same place."
        needed = VerifyConfig.min_inliers
        if m.inliers < needed:
            return (
                f"Only {m.inliers} consistent points: fewer than the {needed} that count as "
                "evidence of the same place (chance matches look like this)."
            )
        return ""

    def _place(self, path: str, x: float) -> QRectF:
        """The frame of ``path`` at ``x``, ROW_HEIGHT tall in its displayed proportions."""
        try:
            w, h = oriented_size(path)
        except Exception as exc:  # noqa: BLE001 - unreadable: a frame that says so
            w, h = 4, 3
            self._errors.setdefault(path, f"cannot read: {exc}")
        scale = ROW_HEIGHT / max(h, 1)
        rect = QRectF(x, 0.0, w * scale, ROW_HEIGHT)
        frame = self.scene.addRect(rect, QPen(QColor("#555555")), QBrush(QColor("#303030")))
        frame.setData(0, (w, h))
        self._frames.append((path, frame))
        image = self._images.get(path)
        if image is not None:
            self._set_pixmap(path, image)
        elif path in self._errors:
            self._label(frame, self._errors[path])
        else:
            self._label(frame, "loading…")
            self._request(path)
        return rect

    def _label(self, frame: QGraphicsRectItem, text: str) -> None:
        item = QGraphicsSimpleTextItem(text, frame)
        item.setBrush(QBrush(QColor("#dddddd")))
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        item.setPos(frame.rect().topLeft() + QPointF(12, 12))

    def _frames_of(self, path: str) -> list[QGraphicsRectItem]:
        return [frame for p, frame in self._frames if p == path]

    def _set_pixmap(self, path: str, image: QImage) -> None:
        pixmap = QPixmap.fromImage(image)
        for frame in self._frames_of(path):
            for child in frame.childItems():
                self.scene.removeItem(child)
            rect = frame.rect()
            item = QGraphicsPixmapItem(pixmap, frame)
            item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
            item.setTransform(
                QTransform.fromScale(rect.width() / image.width(), rect.height() / image.height())
            )
            item.setPos(rect.topLeft())

    def _draw_lines(
        self, query_xy: np.ndarray, ref_xy: np.ndarray, q_rect: QRectF, r_rect: QRectF
    ) -> None:
        (qw, qh), (rw, rh) = (frame.data(0) for _, frame in self._frames)
        sq = (q_rect.width() / qw, q_rect.height() / qh)
        sr = (r_rect.width() / rw, r_rect.height() / rh)
        radius = ROW_HEIGHT / 220.0
        for i, (q, r) in enumerate(zip(np.asarray(query_xy), np.asarray(ref_xy), strict=True)):
            colour = QColor.fromHsvF((i * 0.618034) % 1.0, 0.85, 1.0)
            pen = QPen(colour, 1.5)
            pen.setCosmetic(True)  # the same width at every zoom
            a = QPointF(q_rect.left() + float(q[0]) * sq[0], q_rect.top() + float(q[1]) * sq[1])
            b = QPointF(r_rect.left() + float(r[0]) * sr[0], r_rect.top() + float(r[1]) * sr[1])
            line = self.scene.addLine(a.x(), a.y(), b.x(), b.y(), pen)
            line.setZValue(2)
            self.lines.append(line)
            for p in (a, b):
                dot = QGraphicsEllipseItem(p.x() - radius, p.y() - radius, 2 * radius, 2 * radius)
                dot.setPen(pen)
                dot.setZValue(3)
                self.scene.addItem(dot)
                self._dots.append(dot)

    def _set_lines_visible(self, visible: bool) -> None:
        for item in (*self.lines, *self._dots):
            item.setVisible(visible)

    def _request(self, path: str) -> None:
        if path in self._pending:
            return
        self._pending.add(path)
        self._pool.start(ImageJob(path, VIEW_SIZE, self._signals, draft=True))

    def _on_loaded(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        self._images[path] = image
        while len(self._images) > CACHE:
            self._images.popitem(last=False)
        self._set_pixmap(path, image)

    def _on_failed(self, path: str, reason: str) -> None:
        self._pending.discard(path)
        self._errors[path] = reason
        log.warning("the match viewer cannot show %s: %s", path, reason)
        for frame in self._frames_of(path):
            for child in frame.childItems():
                self.scene.removeItem(child)
            self._label(frame, reason)

    def pending(self) -> int:
        """Photos still being decoded for the viewer (0 once both are drawn)."""
        return len(self._pending)

    def done(self, result: int) -> None:
        """Closing drops queued decodes (a running one finishes into the cache)."""
        self._pool.clear()
        super().done(result)
