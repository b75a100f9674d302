"""MapView in a real (offscreen) QtWebEngine: offline load, drawing, escaping, clicks, drops."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("PySide6.QtWebEngineWidgets", reason="QtWebEngine is not available")

from PySide6.QtCore import QEvent, QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWebEngineCore import (
    QWebEngineProfile,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from netvlad_gui.core.mappage import HTTP_USER_AGENT
from netvlad_gui.ui.mapview import MapView

LOAD_TIMEOUT_MS = 30_000
EVIL = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
CANARY = (  # an image that cannot load and says so
    "(() => { const i = new Image(); i.onerror = () => { window.nvCanary = 1 }; "
    "i.src = 'x'; return 1 })()"
)

LUND = (55.698, 13.195)
REFERENCES = [
    {"id": i, "lat": LUND[0] + 0.002 * i, "lon": LUND[1] + 0.001 * i, "label": f"ref_{i}.jpg"}
    for i in range(6)
]
RESULT = {
    "query": {
        "label": "query.jpg",
        "lat": LUND[0],
        "lon": LUND[1],
        "radius_m": 120.0,
        "confidence": 0.8,
        "true_lat": LUND[0] + 0.001,
        "true_lon": LUND[1] + 0.001,
        "error_m": 130.0,
    },
    "matches": [
        {
            "rank": r,
            "id": r,
            "lat": LUND[0] + 0.0004 * r,
            "lon": LUND[1] - 0.0004 * r,
            "label": f"match_{r}.jpg",
            "score": 1.0 - 0.1 * r,
            "distance_m": 40.0 * r,
            "thumb_url": "",
        }
        for r in (1, 2, 3)
    ],
}


@pytest.fixture(autouse=True)
def _delete_closed_views() -> Iterator[None]:
    """Really delete each test's views (pytest-qt only schedules it), pages before profile."""
    yield
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def run_js(qtbot, view: MapView, expression: str) -> Any:
    """Evaluate a JS expression in the page and return its value.

    The value travels as JSON: this PySide6 hands JS objects and arrays back as empty strings.
    """
    with qtbot.waitCallback(timeout=10_000) as callback:
        view.page().runJavaScript(f"JSON.stringify({expression})", 0, callback)
    text = callback.args[0]
    return None if text in (None, "") else json.loads(text)


def make_view(qtbot, **kwargs: Any) -> MapView:
    view = MapView(**kwargs)
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    return view


@pytest.fixture
def view(qtbot) -> MapView:
    view = make_view(qtbot)
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    return view


class _Recorder(QWebEngineUrlRequestInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        self.urls.append(info.requestUrl().toString())


def test_page_loads_offline_from_local_files_only(qtbot) -> None:
    recorder = _Recorder()
    profile = QWebEngineProfile.defaultProfile()
    profile.setUrlRequestInterceptor(recorder)
    try:
        view = make_view(qtbot)
        with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
            pass
        assert run_js(qtbot, view, "typeof L") == "object"
        assert run_js(qtbot, view, "typeof L.markerClusterGroup") == "function"
        assert run_js(qtbot, view, "window.nvReady === true && !!window.nvBridge") is True
        assert run_js(qtbot, view, "document.querySelectorAll('.leaflet-control-scale').length")
    finally:
        profile.setUrlRequestInterceptor(None)
    assert recorder.urls, "the interceptor saw no request"
    schemes = {QUrl(u).scheme() for u in recorder.urls}
    assert schemes <= {"file", "qrc", "data"}, recorder.urls
    assert profile.httpUserAgent() == HTTP_USER_AGENT


def test_offline_base_layer_draws_land_and_water(qtbot, view: MapView) -> None:
    assert run_js(qtbot, view, "nv.count().base") > 200
    # Sample the base canvas: Sahara is land-coloured, the mid-Atlantic is left transparent.
    pixel_js = """(function (lat, lon) {
        var map = nv.layers().map;
        var canvas = document.querySelector('.leaflet-nvBase-pane canvas');
        if (!canvas) return null;
        var p = map.latLngToContainerPoint([lat, lon]);
        var m = map.getContainer().getBoundingClientRect();
        var c = canvas.getBoundingClientRect();
        var k = canvas.width / c.width;
        var x = Math.round((m.left + p.x - c.left) * k), y = Math.round((m.top + p.y - c.top) * k);
        return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data);
    })(%s, %s)"""

    def pixel(lat: float, lon: float) -> list[int] | None:
        return run_js(qtbot, view, pixel_js % (lat, lon))

    qtbot.waitUntil(lambda: (pixel(22, 10) or [0, 0, 0, 0])[3] == 255, timeout=10_000)
    assert pixel(22, 10) == [242, 239, 233, 255]
    assert pixel(0, -30)[3] == 0


def test_calls_before_ready_are_queued_and_counted(qtbot) -> None:
    view = make_view(qtbot)
    assert not view.is_ready
    view.set_references(REFERENCES)
    view.show_result(RESULT)
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    counts = run_js(qtbot, view, "nv.count()")
    assert counts["references"] == len(REFERENCES)
    assert counts["matches"] == 3
    assert counts["truth"] == 1 and counts["prediction"] == 1

    view.select(2)
    assert run_js(qtbot, view, "nv.count().selected") == 2
    assert run_js(qtbot, view, "document.querySelectorAll('.nv-selected').length") == 1

    view.clear()
    counts = run_js(qtbot, view, "nv.count()")
    assert (counts["matches"], counts["truth"], counts["prediction"]) == (0, 0, 0)
    assert counts["references"] == len(REFERENCES)
    view.clear(references=True)
    assert run_js(qtbot, view, "nv.count().references") == 0


def test_labels_from_files_are_shown_as_text(qtbot, view: MapView) -> None:
    result = {
        "query": {**RESULT["query"], "label": EVIL},
        "matches": [{**RESULT["matches"][0], "label": EVIL, "thumb_url": "javascript:alert(1)"}],
    }
    view.set_references([{"id": 1, "lat": 10.0, "lon": 10.0, "label": EVIL}])
    view.show_result(result)
    view.select(1)
    view.run_js("nv.layers().prediction.openTooltip(); nv.layers().truth.openTooltip();")
    qtbot.waitUntil(
        lambda: run_js(qtbot, view, "!!document.querySelector('.leaflet-popup-content .nv-title')"),
        timeout=5_000,
    )
    popup = run_js(qtbot, view, "document.querySelector('.leaflet-popup-content').textContent")
    assert EVIL in popup
    tips = run_js(qtbot, view, "document.querySelector('.leaflet-tooltip-pane').textContent")
    assert EVIL in tips
    # The reference's tooltip, opened on the lone (unclustered) reference marker.
    run_js(qtbot, view, "nv.layers().references.getLayers()[0].openTooltip() && 1")
    # Once a canary image requested now has failed, a wrongly created <img onerror> (requested
    # earlier) has had its chance to fire too.
    run_js(qtbot, view, CANARY)
    qtbot.waitUntil(lambda: run_js(qtbot, view, "window.nvCanary === 1"), timeout=10_000)
    assert run_js(qtbot, view, "typeof window.pwned") == "undefined"
    assert run_js(qtbot, view, "document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert run_js(qtbot, view, "document.querySelectorAll('.leaflet-popup img').length") == 0


def test_clicking_a_match_emits_its_rank(qtbot, view: MapView) -> None:
    view.show_result(RESULT)
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().matches") == 3, timeout=5_000)
    with qtbot.waitSignal(view.matchClicked, timeout=5_000) as blocker:
        view.run_js("nv.matchMarker(2).fire('click')")
    assert blocker.args == [2]
    assert run_js(qtbot, view, "nv.count().selected") == 2


def test_navigation_away_is_refused(qtbot, view: MapView, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="netvlad_gui.ui.mapview")
    home = view.url()
    view.run_js("window.location.href = 'file:///';")
    # Wait for the page's decision, not for a fixed time: it logs each refusal.
    qtbot.waitUntil(lambda: "refused navigation to file:///" in caplog.text, timeout=10_000)
    assert view.url() == home
    assert run_js(qtbot, view, "typeof window.nv") == "object"


def test_dropped_files_reach_the_parent_not_the_page(qtbot) -> None:
    class Parent(QWidget):
        def __init__(self) -> None:
            super().__init__()
            self.setAcceptDrops(True)
            self.dropped: list[str] = []

        def dragEnterEvent(self, event) -> None:
            event.acceptProposedAction()

        def dropEvent(self, event) -> None:
            self.dropped += [u.toLocalFile() for u in event.mimeData().urls()]
            event.acceptProposedAction()

    parent = Parent()
    qtbot.addWidget(parent)
    view = MapView(parent)
    QVBoxLayout(parent).addWidget(view)
    parent.resize(600, 400)
    parent.show()
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    assert not view.acceptDrops()
    home = view.url()
    target = view.focusProxy() or view  # the widget Chromium renders into
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile("/tmp/photo.jpg")])
    centre = QPointF(target.rect().center())
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(target, enter)
    drop = QDropEvent(centre, Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(target, drop)
    qtbot.waitUntil(lambda: parent.dropped == ["/tmp/photo.jpg"], timeout=5_000)
    assert view.url() == home


class _TileHandler(http.server.BaseHTTPRequestHandler):
    agents: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).agents.append(self.headers.get("User-Agent", ""))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tile_server() -> Iterator[str]:
    _TileHandler.agents = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        server.shutdown()
        server.server_close()


def test_online_tiles_identify_the_app(qtbot, tile_server: str) -> None:
    view = make_view(qtbot, tiles_online=True, tile_url=tile_server, attribution="local test")
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    qtbot.waitUntil(lambda: len(_TileHandler.agents) > 0, timeout=10_000)
    assert set(_TileHandler.agents) == {HTTP_USER_AGENT}
    assert "local test" in run_js(
        qtbot, view, "document.querySelector('.leaflet-control-attribution').textContent"
    )


def test_evaluate_returns_python_data(qtbot, view: MapView) -> None:
    view.set_references(REFERENCES)
    with qtbot.waitCallback(timeout=10_000) as callback:
        view.evaluate("nv.count()", callback)
    assert callback.args[0]["references"] == len(REFERENCES)


def test_html_path_is_a_file(view: MapView) -> None:
    assert isinstance(view.html_path, Path) and view.html_path.is_file()
    assert view.url() == QUrl.fromLocalFile(str(view.html_path))
