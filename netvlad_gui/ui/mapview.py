"""MapView: the offline Leaflet map in a QWebEngineView, driven from Python.

The page (netvlad_gui.core.query.mappage) is written to a temporary folder and loaded from the file, never
with setHtml (2 MB limit). Calls made before the page is ready are queued and run once it is; the
page reports readiness and match clicks back through a QWebChannel bridge.

Drops: the view refuses drag-and-drop (``setAcceptDrops(False)``) so files dragged onto the map
reach the parent window's drop handler instead of making Chromium open them; the page also
refuses every navigation away from the map, so nothing can replace it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWebChannel import QWebChannel
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile, QWebEngineSettings
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QWidget

from netvlad_gui.core.query.mappage import (
    DEFAULT_TILE_ATTRIBUTION,
    DEFAULT_TILE_URL,
    HTTP_USER_AGENT,
    MapPageError,
    js_call,
    reference_coverage,
    tile_config,
    write_map_page,
)

log = logging.getLogger(__name__)

JsCallback = Callable[[Any], None]


class _Bridge(QObject):
    """The object the page sees as ``nvBridge``; its slots are called from JavaScript."""

    page_ready = Signal()
    match_clicked = Signal(int)
    track_clicked = Signal(int)
    online_tiles_requested = Signal()

    @Slot()
    def pageReady(self) -> None:
        self.page_ready.emit()

    @Slot()
    def useOnlineTiles(self) -> None:
        self.online_tiles_requested.emit()

    @Slot(int)
    def matchClicked(self, rank: int) -> None:
        self.match_clicked.emit(int(rank))

    @Slot(int)
    def trackClicked(self, token: int) -> None:
        self.track_clicked.emit(int(token))


class _MapPage(QWebEnginePage):
    """Stays on the map: links open in the system browser, every other navigation is refused."""

    def __init__(self, profile: QWebEngineProfile, home: QUrl, parent: QObject) -> None:
        super().__init__(profile, parent)
        self._home = home

    def acceptNavigationRequest(
        self, url: QUrl, nav_type: QWebEnginePage.NavigationType, is_main_frame: bool
    ) -> bool:
        if url.isLocalFile() and url.toLocalFile() == self._home.toLocalFile():
            return True  # the map itself (a fragment or reload does not matter)
        if nav_type == QWebEnginePage.NavigationType.NavigationTypeLinkClicked and url.scheme() in (
            "http",
            "https",
        ):
            QDesktopServices.openUrl(url)  # e.g. the tile attribution link
        else:
            log.debug("map page refused navigation to %s", url.toString())
        return False

    def javaScriptConsoleMessage(
        self,
        level: QWebEnginePage.JavaScriptConsoleMessageLevel,
        message: str,
        line: int,
        source: str,
    ) -> None:
        error = level == QWebEnginePage.JavaScriptConsoleMessageLevel.ErrorMessageLevel
        log.log(
            logging.WARNING if error else logging.DEBUG, "map js %s:%d: %s", source, line, message
        )


class MapView(QWebEngineView):
    """The map widget: references, the located query and its matches.

    Signals: ``ready`` once the page can take calls; ``matchClicked(rank)`` when the user clicks a
    numbered match marker; ``trackClicked(token)`` when they click a photo on the predicted
    track of a walk; ``onlineTilesRequested`` when the user clicks "Use online map tiles" on
    the map (the owner saves the setting and calls ``set_tiles``). Data dicts follow ``nv.setReferences`` / ``nv.showResult`` in
    resources/web/nvmap.js; labels are shown as plain text, never as HTML.
    """

    ready = Signal()
    matchClicked = Signal(int)
    trackClicked = Signal(int)
    onlineTilesRequested = Signal()

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        tiles_online: bool = False,
        tile_url: str = DEFAULT_TILE_URL,
        attribution: str = DEFAULT_TILE_ATTRIBUTION,
    ) -> None:
        super().__init__(parent)
        self._ready = False
        self._pending: list[tuple[str, JsCallback | None]] = []
        # Drops go to the parent window (which opens dropped photos), not to Chromium.
        self.setAcceptDrops(False)

        try:
            self._tiles = tile_config(tiles_online, tile_url, attribution)
        except MapPageError as exc:  # a bad saved URL must not stop the app from starting
            log.warning("map tiles off: %s", exc)
            tiles_online, self._tiles = False, tile_config(False)
        self._tmp = tempfile.TemporaryDirectory(prefix="netvlad-map-")
        self._html = write_map_page(
            Path(self._tmp.name),
            tiles_online=tiles_online,
            tile_url=tile_url,
            attribution=attribution,
        )
        self._url = QUrl.fromLocalFile(str(self._html))

        # Tile servers (OpenStreetMap's policy) want a User-Agent that names the application.
        profile = QWebEngineProfile.defaultProfile()
        profile.setHttpUserAgent(HTTP_USER_AGENT)
        page = _MapPage(profile, self._url, self)
        settings = page.settings()
        settings.setAttribute(QWebEngineSettings.WebAttribute.LocalContentCanAccessFileUrls, True)
        # Off unless tiles are wanted: then the file:// page cannot reach the network at all.
        settings.setAttribute(
            QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls, bool(tiles_online)
        )

        self._bridge = _Bridge(self)
        self._channel = QWebChannel(page)
        self._channel.registerObject("nvBridge", self._bridge)
        page.setWebChannel(self._channel)
        self._bridge.page_ready.connect(self._mark_ready)
        self._bridge.match_clicked.connect(self.matchClicked)
        self._bridge.track_clicked.connect(self.trackClicked)
        self._bridge.online_tiles_requested.connect(self.onlineTilesRequested)

        self.setPage(page)
        app = QCoreApplication.instance()
        if app is not None:
            # The page must go before the application's default profile does, or Qt warns
            # "Release of profile requested but WebEnginePage still not deleted".
            app.aboutToQuit.connect(self._release_page)
        self.loadStarted.connect(self._on_load_started)
        self.loadFinished.connect(self._on_load_finished)
        self.load(self._url)

    # ---- public API ---------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready

    @property
    def html_path(self) -> Path:
        """The page file this view shows (in a temporary folder owned by the view)."""
        return self._html

    @property
    def tiles_online(self) -> bool:
        """Whether the map loads street tiles from the network (else the offline outline only)."""
        return bool(self._tiles["online"])

    def set_tiles(
        self,
        online: bool,
        tile_url: str = DEFAULT_TILE_URL,
        attribution: str = DEFAULT_TILE_ATTRIBUTION,
    ) -> None:
        """Turn online street tiles on or off now, without reloading the page.

        Raises MapPageError (before changing anything) for a malformed tile URL; a call that
        changes nothing does nothing.
        """
        config = tile_config(online, tile_url, attribution)
        if config == self._tiles:
            return
        self._tiles = config
        # Off: the file:// page cannot reach the network at all.
        self.page().settings().setAttribute(
            QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls, bool(online)
        )
        self.run_js(js_call("setTiles", config))

    def set_references(self, references: Sequence[Mapping[str, Any]]) -> None:
        """Show the library's photos: dicts with id, lat, lon, label.

        Drawn twice: as clustered markers, and as a faint coverage layer of positions and tracks
        (core's ``reference_coverage``) that shows the library's streets without any tiles.
        """
        references = list(references)
        self.run_js(js_call("setReferences", references, reference_coverage(references)))

    def show_result(self, result: Mapping[str, Any]) -> None:
        """Draw a located query: ``{"query": {...}, "matches": [...]}`` (replaces the last one)."""
        self.run_js(js_call("showResult", result))

    def show_track(self, track: Mapping[str, Any], *, fit: bool = False) -> None:
        """Draw the predicted track of the shown photo's walk: ``{"points": [...]}`` as
        ``mapdata.track_to_map`` makes it (replaces the last one; ``show_result`` clears it).
        ``fit``: fit the view to the result and the photo's near neighbours."""
        self.run_js(js_call("showTrack", track, {"fit": bool(fit)}))

    def select(self, rank: int) -> None:
        """Highlight match ``rank`` and open its popup (does not emit matchClicked)."""
        self.run_js(js_call("select", int(rank)))

    def clear(self, *, references: bool = False) -> None:
        """Remove the drawn result; with ``references=True`` the reference dots too."""
        self.run_js(js_call("clear", {"references": bool(references)}))

    def fit_all(self) -> None:
        """Zoom to everything drawn (the world when nothing is)."""
        self.run_js(js_call("fitAll"))

    def run_js(self, script: str, callback: JsCallback | None = None) -> None:
        """Run JavaScript in the page now, or as soon as it is ready."""
        if not self._ready:
            self._pending.append((script, callback))
            return
        if callback is None:
            self.page().runJavaScript(script, 0)
        else:
            self.page().runJavaScript(script, 0, callback)

    def evaluate(self, expression: str, callback: JsCallback) -> None:
        """Evaluate a JS expression and pass its value to ``callback`` as Python data.

        The value travels as JSON because PySide6 hands JS objects and arrays back as ``""``.
        """

        def decode(text: Any) -> None:
            callback(json.loads(text) if isinstance(text, str) and text else None)

        self.run_js(f"JSON.stringify({expression})", decode)

    # ---- internals ----------------------------------------------------------------------

    def _on_load_started(self) -> None:
        self._ready = False

    def _on_load_finished(self, ok: bool) -> None:
        if not ok:
            log.warning("map page failed to load: %s", self._html)
            return
        # Fallback when the QWebChannel bridge is unavailable: the page sets window.nvReady.
        self.page().runJavaScript(
            "window.nvReady === true", 0, lambda ready: ready and self._mark_ready()
        )

    @Slot()
    def _release_page(self) -> None:
        self._ready = False
        self.page().deleteLater()

    @Slot()
    def _mark_ready(self) -> None:
        if self._ready:
            return
        self._ready = True
        pending, self._pending = self._pending, []
        for script, callback in pending:
            self.run_js(script, callback)
        self.ready.emit()
