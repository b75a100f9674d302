"""The results panel: the query photo, its predicted place, and its top-N matches."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QGuiApplication,
    QIcon,
    QImage,
    QPalette,
    QPixmap,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core.query import wording
from netvlad_gui.core.query.verdict import UNCERTAIN

from .mapdata import format_coords, format_distance, osm_url
from .queuepanel import DONE, FAILED, WAITING, Entry
from .thumbnails import ThumbnailLoader
from .verdictstyle import GUESS_COLOUR, VERDICT_COLOURS
from .widgets import ICON_COPY, ICON_OPEN, ActionButton, ElidingLabel, line_icon, plain_label

QUERY_THUMB = QSize(200, 150)
MATCH_THUMB = QSize(140, 105)
# Narrower than this (the Retrain dock open beside it), the query card and the matches shrink
# so that three or more matches stay in view.
COMPACT_WIDTH = 900
COMPACT_QUERY_THUMB = QSize(96, 72)
COMPACT_MATCH_THUMB = QSize(100, 75)
# The header: the verdict's least width (it wraps below its natural width), the gap before the
# photo's position, and the least room the photo's name keeps before the actions turn to icons.
VERDICT_MIN_WIDTH = 110
HEADER_GAP = 12
TITLE_KEEP = 140
TITLE_SHARE = 0.4  # of the room beside the actions, when the verdict has to wrap anyway
EVIDENCE_KEEP = 150  # px of the evidence beside the headline that the actions' words may not take


def breakable(text: str, every: int = 12) -> str:
    """``text`` with zero-width spaces in words longer than ``every`` characters, so that a
    word-wrapped label breaks a long path or name instead of cutting it off at its edge."""

    def split(word: str) -> str:
        if len(word) <= every:
            return word
        return "\u200b".join(word[i : i + every] for i in range(0, len(word), every))

    return " ".join(split(w) for w in text.split(" "))


def _scaled(image: QImage, size: QSize) -> QPixmap:
    return QPixmap.fromImage(image).scaled(
        size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class ResultsPanel(QWidget):
    """Shows one Entry: query thumbnail, prediction, actions, and the matches as thumbnails.

    Signals: ``matchSelected(rank)`` when the user picks a match, ``matchActivated(rank)`` when
    they open it (double-click or Enter: the match viewer opens), ``stepRequested(delta)`` for
    the previous/next photo, ``message(text)`` for the status bar, ``browserFailed(url)``,
    ``actionsChanged(enabled, guess)`` when Copy/Open change (the Edit menu follows them).
    """

    matchSelected = Signal(int)
    matchActivated = Signal(int)
    actionsChanged = Signal(bool, bool)  # Copy/Open usable, and for a guess
    stepRequested = Signal(int)
    message = Signal(str)
    browserFailed = Signal(str)  # the URL no browser opened: the window offers to copy it

    def __init__(self, thumbs: ThumbnailLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._thumbs = thumbs
        self._entry: Entry | None = None
        self._position = (0, 0)
        self._match_items: dict[str, list[QListWidgetItem]] = {}
        self._query_size, self._match_size = QUERY_THUMB, MATCH_THUMB
        self.viewer = None  # the open MatchViewer (ui/matchviewer.py), if any

        # Header: which photo, its verdict, its actions, and stepping through the queue. Nothing
        # here may widen the window: the name is elided, the verdict wraps, the actions become
        # icons when the words do not fit (``_fit_header``).
        self.title = ElidingLabel(min_width=60)
        self.title.setObjectName("resultTitle")
        font = self.title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.title.setFont(font)
        self.verdict = QLabel()
        self.verdict.setObjectName("verdict")
        self.verdict.setTextFormat(Qt.TextFormat.RichText)  # built from escaped text only
        self.verdict.setWordWrap(True)
        self.verdict.setMinimumWidth(VERDICT_MIN_WIDTH)
        self.verdict.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.position_label = plain_label(wrap=False)
        self.prev_button = QToolButton()
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("Previous photo")
        self.next_button = QToolButton()
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("Next photo")
        ink = self.palette().color(QPalette.ColorRole.ButtonText)
        self.copy_button = ActionButton("Copy coordinates", line_icon(ICON_COPY, ink))
        self.osm_button = ActionButton("Open in OpenStreetMap", line_icon(ICON_OPEN, ink))
        self._label_actions(None)
        self.header = QHBoxLayout()
        header = self.header
        header.addWidget(self.title)
        header.addSpacing(10)
        header.addWidget(self.verdict, 1)  # the verdict leads, right after the photo's name
        header.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(self.osm_button, 0, Qt.AlignmentFlag.AlignTop)
        header.addSpacing(HEADER_GAP)
        header.addWidget(self.position_label, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(self.prev_button, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(self.next_button, 0, Qt.AlignmentFlag.AlignTop)

        # The query card: the photo, and where it was taken.
        self.query_image = QLabel()
        self.query_image.setObjectName("queryThumb")
        self.query_image.setFixedSize(QUERY_THUMB)
        self.query_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.query_image.setFrameShape(QFrame.Shape.StyledPanel)
        self.prediction = QLabel()
        self.prediction.setTextFormat(Qt.TextFormat.RichText)  # built from escaped text only
        self.prediction.setWordWrap(True)
        self.prediction.setObjectName("prediction")
        self.prediction.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.prediction.setFixedWidth(QUERY_THUMB.width() + 24)
        self.prediction.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        card = QVBoxLayout()
        card.setSpacing(4)
        card.addWidget(self.query_image, 0, Qt.AlignmentFlag.AlignLeft)
        card.addWidget(self.prediction, 1)

        # The matches.
        self.matches = QListWidget()
        self.matches.setObjectName("matchList")
        self.matches.setViewMode(QListView.ViewMode.IconMode)
        self.matches.setFlow(QListView.Flow.LeftToRight)
        self.matches.setWrapping(False)
        self.matches.setMovement(QListView.Movement.Static)
        self.matches.setResizeMode(QListView.ResizeMode.Adjust)
        self.matches.setIconSize(MATCH_THUMB)
        self.matches.setGridSize(QSize(MATCH_THUMB.width() + 12, MATCH_THUMB.height() + 44))
        self.matches.setWordWrap(True)
        self.matches.setMinimumHeight(MATCH_THUMB.height() + 66)
        self.matches.setMinimumWidth(MATCH_THUMB.width() * 2)
        self.matches.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.matches_title = plain_label("Best matches", wrap=False)
        self.matches_title.setStyleSheet("color: gray;")

        body = QHBoxLayout()
        body.addLayout(card, 0)
        column = QVBoxLayout()
        column.setSpacing(2)
        column.addWidget(self.matches_title)
        column.addWidget(self.matches, 1)
        body.addLayout(column, 1)

        result_page = QWidget()
        page_layout = QVBoxLayout(result_page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        page_layout.addLayout(header)
        page_layout.addLayout(body, 1)

        self.placeholder = plain_label(
            "Drop photos or a folder anywhere on the window (or use File → Open photos…) "
            "to find where they were taken."
        )
        self.placeholder.setObjectName("resultsPlaceholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: palette(mid); font-size: 13pt;")

        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(result_page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(self.stack)

        self.prev_button.clicked.connect(lambda: self.stepRequested.emit(-1))
        self.next_button.clicked.connect(lambda: self.stepRequested.emit(1))
        self.copy_button.clicked.connect(self.copy_coordinates)
        self.osm_button.clicked.connect(self.open_in_osm)
        self.matches.itemSelectionChanged.connect(self._on_match_selection)
        self.matches.itemActivated.connect(self._on_match_activated)
        thumbs.loaded.connect(self._on_thumbnail)
        thumbs.failed.connect(self._on_thumbnail_failed)
        self.show_entry(None)

    # ---- what is shown -----------------------------------------------------------------------

    @property
    def entry(self) -> Entry | None:
        return self._entry

    def show_entry(self, entry: Entry | None, position: tuple[int, int] = (0, 0)) -> None:
        self._entry, self._position = entry, position
        self.matches.clear()
        self._match_items.clear()
        if entry is None:
            self.stack.setCurrentIndex(0)
            self.copy_button.setEnabled(False)
            self.osm_button.setEnabled(False)
            self.actionsChanged.emit(False, False)
            return
        self.stack.setCurrentIndex(1)
        self.title.setText(entry.display_name)
        self.title.setToolTip(html.escape(entry.path))  # the whole path, however it is elided
        index, count = position
        self.position_label.setText(f"{index} of {count}" if count > 1 else "")
        self.prev_button.setEnabled(index > 1)
        self.next_button.setEnabled(0 < index < count)
        self.prev_button.setVisible(count > 1)
        self.next_button.setVisible(count > 1)
        self._set_query_thumb(entry.path)
        self.verdict.setText(self._verdict_text(entry))
        self.prediction.setText(self._describe(entry))
        located = (  # a final answer with a place (a guess included: its buttons say so)
            entry.state == DONE
            and not entry.stale
            and entry.result is not None
            and wording.coordinates_kind(entry.result) in (wording.ANSWER, wording.GUESS)
        )
        self.copy_button.setEnabled(located)
        self.osm_button.setEnabled(located)
        self._label_actions(entry.result if located else None)
        self.actionsChanged.emit(located, located and entry.result.guess)
        self.prediction.setStyleSheet("color: darkred;" if entry.state == FAILED else "")
        results = entry.result.matches if entry.result is not None and not entry.stale else []
        self.matches_title.setText(f"Best {len(results)} matches" if results else "")
        for m in results:
            self._add_match(m)
        self._fit_header()
        if self.viewer is not None and self.viewer.isVisible():
            self.viewer.update_entry(entry)  # e.g. the refined result: its lines appear

    def select_rank(self, rank: int) -> None:
        """Select match ``rank`` without emitting ``matchSelected`` (the map asked)."""
        self.matches.blockSignals(True)
        try:
            for i in range(self.matches.count()):
                item = self.matches.item(i)
                if item.data(Qt.ItemDataRole.UserRole) == rank:
                    self.matches.setCurrentItem(item)
                    self.matches.scrollToItem(item)
                    break
        finally:
            self.matches.blockSignals(False)

    def selected_rank(self) -> int | None:
        item = self.matches.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def thumbnails_pending(self) -> int:
        """Thumbnails on show that are still being decoded (0 once everything is drawn)."""
        if self._entry is None:
            return 0
        paths = {self._entry.path, *self._match_items}
        return sum(
            1 for p in paths if self._thumbs.cached(p) is None and self._thumbs.error(p) is None
        )

    # ---- actions ------------------------------------------------------------------------------

    def copy_coordinates(self) -> None:
        res = self._entry.result if self._entry else None
        if res is None or res.lat is None:
            return
        text = format_coords(res.lat, res.lon)
        QGuiApplication.clipboard().setText(text)
        if res.guess:
            self.message.emit(f"Copied the guess {text} (not found in this library)")
        else:
            self.message.emit(f"Copied {text}")

    def open_in_osm(self) -> None:
        res = self._entry.result if self._entry else None
        if res is None or res.lat is None:
            return
        url = osm_url(res.lat, res.lon)
        if not QDesktopServices.openUrl(QUrl(url)):
            self.browserFailed.emit(url)

    # ---- internals -------------------------------------------------------------------------

    @staticmethod
    def _verdict_text(entry: Entry) -> str:
        """The verdict headline (rich text, in the verdict's colour) and its evidence."""
        res = entry.result
        if entry.state != DONE or entry.stale or res is None:  # stale: another library's
            return ""
        # A provisional stage has no verdict yet: no verdict word, no verdict colour.
        colour = "" if res.provisional else VERDICT_COLOURS.get(res.verdict or "", "")
        head = html.escape(wording.headline(res) or "No verdict")
        note = wording.evidence_line(res)
        tint = f"; color:{colour}" if colour else "; color:gray"
        return (
            f"<span style='font-size:12pt; font-weight:bold{tint}'>{head}</span>"
            f"<span style='color:gray'> · {html.escape(note)}</span>"
        )

    @staticmethod
    def _describe(entry: Entry) -> str:
        """Rich text for the prediction label; every value is escaped (errors can name files).

        ``not_found`` shows no bold coordinates: the nearest reference is a guess, greyed and
        called one. ``uncertain`` shows the place in the verdict's own colour, not in bold.
        """
        esc = html.escape
        if entry.stale:
            return (
                "<p><b>From another library.</b><br>This photo was located against the "
                "previous library; locate it again to place it against this one.</p>"
            )
        if entry.state == WAITING:
            return "<p>Locating…</p>"
        if entry.state == FAILED:  # core's reason, whole: long words may break anywhere
            return f"<p><b>Cannot locate this photo.</b><br>{breakable(esc(entry.error))}</p>"
        res = entry.result
        if res is None:
            return ""
        colour = VERDICT_COLOURS.get(res.verdict or "", "")
        kind = wording.coordinates_kind(res)
        parts = []
        if kind == wording.NO_PLACE:
            parts.append("<p>No match with GPS: this photo cannot be placed.</p>")
        elif kind == wording.FIRST_GUESS:
            parts.append(
                f"<p style='margin:0; color:{GUESS_COLOUR}'>First guess from the global search, "
                f"being checked:<br>{esc(format_coords(res.lat, res.lon))}</p>"
            )
        elif kind == wording.GUESS:
            parts.append(
                f"<p style='margin:0; color:{GUESS_COLOUR}'>Nearest guess, not an answer:"
                f"<br>{esc(format_coords(res.lat, res.lon))}</p>"
            )
        else:
            weight = "bold" if res.verdict != UNCERTAIN else "normal"
            tint = f"; color:{colour}" if res.verdict == UNCERTAIN else ""
            parts.append(
                "<p style='margin:0'>"
                f"<span style='font-size:12pt; font-weight:{weight}{tint}'>"
                f"{esc(format_coords(res.lat, res.lon))}</span><br>"
                f"±{esc(format_distance(res.radius_m))} · confidence "
                f"<b>{res.confidence * 100:.0f} %</b></p>"
            )
        if res.verdict_reason:
            parts.append(f"<p style='margin-top:4px; color:gray'>{esc(res.verdict_reason)}</p>")
        if res.true_lat is not None:
            line = (
                f"<p style='margin-top:4px'><span style='color:gray'>Own GPS</span> "
                f"{esc(format_coords(res.true_lat, res.true_lon))}"
            )
            if res.error_m is not None and kind != wording.FIRST_GUESS:
                line += f"<br>error <b>{esc(format_distance(res.error_m))}</b>"
            parts.append(line + "</p>")
        return "".join(parts)

    def _label_actions(self, res) -> None:
        """Copy/Open say "guess" when the photo is not in this library (the tooltip says what
        the button does in full: it may show only its icon)."""
        if res is not None and res.guess:
            self.copy_button.setText("Copy guessed coordinates")
            self.copy_button.setToolTip(
                "Copy guessed coordinates: not found in this library, so this is the nearest "
                "reference's position, a guess"
            )
            self.osm_button.setText("Open guess in OpenStreetMap")
            self.osm_button.setToolTip(
                "Open guess in OpenStreetMap: the guessed position (not evidence), in your browser"
            )
        else:
            self.copy_button.setText("Copy coordinates")
            self.copy_button.setToolTip("Copy coordinates: the predicted latitude, longitude")
            self.osm_button.setText("Open in OpenStreetMap")
            self.osm_button.setToolTip(
                "Open in OpenStreetMap: the predicted position, in your web browser"
            )

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._set_sizes(self.width() < COMPACT_WIDTH)
        self._fit_header()

    def _fit_header(self) -> None:
        """Fit the header to the panel's width without ever asking for more.

        In order of what gives way first: the verdict's evidence wraps under its headline, the
        actions show only their icons (their tooltips say what they do) once their words would
        leave less than ``EVIDENCE_KEEP`` px of the evidence on the headline's line, the name is
        elided down to ``TITLE_KEEP`` px (or keeps ``TITLE_SHARE`` of the room when the verdict
        wraps anyway), and at the narrowest the name is elided further.
        """
        if self._entry is None:
            return
        margins = self.layout().contentsMargins()
        width = self.width() - margins.left() - margins.right()
        nav = sum(
            w.sizeHint().width()
            for w in (self.position_label, self.prev_button, self.next_button)
            if not w.isHidden()
        )
        fixed = nav + 10 + HEADER_GAP + 6 * self.header.spacing() + 4
        text = self.verdict.text()
        verdict = self._rich_width(text)
        headline = self._rich_width(text.split("</span>", 1)[0])  # the verdict's own words
        title = self.title.sizeHint().width()
        words = self.copy_button.text_width() + self.osm_button.text_width()
        line = min(verdict, headline + EVIDENCE_KEEP)  # the headline and some of the evidence
        compact = fixed + words + line + min(title, TITLE_KEEP) > width
        for button in (self.copy_button, self.osm_button):
            button.set_compact(compact)
        buttons = self.copy_button.sizeHint().width() + self.osm_button.sizeHint().width()
        room = width - fixed - buttons  # for the name and the verdict
        if title + verdict <= room:
            shown = title
        elif TITLE_KEEP + verdict <= room:  # the verdict keeps one line
            shown = room - verdict
        else:  # the verdict wraps whatever the name does: the name keeps a fair share
            shown = min(title, max(TITLE_KEEP, int(room * TITLE_SHARE)))
        shown = min(shown, room - VERDICT_MIN_WIDTH)
        self.title.setMaximumWidth(max(self.title.minimumWidth(), shown))

    def _rich_width(self, text: str) -> int:
        """The width of (part of) the verdict's rich text on one line."""
        if not text:
            return 0
        doc = QTextDocument()
        doc.setDocumentMargin(0)
        doc.setDefaultFont(self.verdict.font())
        doc.setHtml(text)
        return int(doc.idealWidth()) + 6

    def _set_sizes(self, compact: bool) -> None:
        query, match = (
            (COMPACT_QUERY_THUMB, COMPACT_MATCH_THUMB) if compact else (QUERY_THUMB, MATCH_THUMB)
        )
        if match == self._match_size:
            return
        self._query_size, self._match_size = query, match
        self.query_image.setFixedSize(query)
        self.prediction.setFixedWidth(query.width() + 24)
        self.matches.setIconSize(match)
        # At least as wide as a match's caption ("score 0.294 · 16 m") on one line.
        self.matches.setGridSize(QSize(max(match.width() + 12, 124), match.height() + 44))
        self.matches.setMinimumHeight(match.height() + 66)
        if self._entry is not None:
            selected = self.selected_rank()
            self.show_entry(self._entry, self._position)  # redraw the thumbnails at the new size
            if selected is not None:
                self.select_rank(selected)

    def _set_query_thumb(self, path: str) -> None:
        image = self._thumbs.request(path)
        if image is not None:
            self.query_image.setPixmap(_scaled(image, self._query_size))
        else:
            self.query_image.clear()
            self.query_image.setText(self._thumbs.error(path) and "no preview" or "…")

    def _add_match(self, m) -> None:
        name = Path(m.path).name
        dist = format_distance(m.distance_m) if m.distance_m is not None else "no GPS"
        evidence = f"{m.inliers} points" if m.inliers is not None else f"score {m.score:.3f}"
        item = QListWidgetItem(f"#{m.rank}  {name}\n{evidence} · {dist}")
        item.setData(Qt.ItemDataRole.UserRole, m.rank)
        item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        agrees = "agrees with the prediction" if m.agrees else "elsewhere"
        checked = (
            f"{m.inliers} geometrically consistent points"
            if m.inliers is not None
            else "not verified"
        )
        item.setToolTip(
            html.escape(
                f"{m.path}\nscore {m.score:.3f}, {checked}\n{dist} from the prediction "
                f"({agrees})\nDouble-click or Enter: compare side by side"
            ).replace("\n", "<br>")
        )
        placeholder = QPixmap(self._match_size)
        placeholder.fill(Qt.GlobalColor.lightGray)
        item.setIcon(QIcon(placeholder))
        self.matches.addItem(item)
        self._match_items.setdefault(m.path, []).append(item)
        image = self._thumbs.request(m.path)
        if image is not None:
            item.setIcon(QIcon(_scaled(image, self._match_size)))

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        if self._entry is not None and path == self._entry.path:
            self.query_image.setPixmap(_scaled(image, self._query_size))
        for item in self._match_items.get(path, []):
            item.setIcon(QIcon(_scaled(image, self._match_size)))

    def _on_thumbnail_failed(self, path: str, _reason: str) -> None:
        if self._entry is not None and path == self._entry.path:
            self.query_image.setText("no preview")

    def _on_match_activated(self, item: QListWidgetItem) -> None:
        rank = item.data(Qt.ItemDataRole.UserRole)
        if rank is not None:
            self.open_viewer(int(rank))

    def open_viewer(self, rank: int):
        """Open (or turn) the match viewer on match ``rank`` of the shown photo; the viewer."""
        from .matchviewer import MatchViewer

        if self._entry is None or self._entry.result is None or not self._entry.result.matches:
            return None
        if self.viewer is None:
            self.viewer = MatchViewer(self)
            self.viewer.rankChanged.connect(self._on_viewer_rank)
        self.viewer.show_entry(self._entry, rank)
        self.viewer.show()
        self.viewer.raise_()
        self.viewer.activateWindow()
        self.matchActivated.emit(rank)
        return self.viewer

    def _on_viewer_rank(self, rank: int) -> None:
        """The viewer stepped: select that match here and on the map."""
        self.select_rank(rank)
        self.matchSelected.emit(int(rank))

    def _on_match_selection(self) -> None:
        rank = self.selected_rank()
        if rank is not None:
            self.matchSelected.emit(int(rank))
