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

from _gui import delete_later, isolated_settings, open_window  # noqa: F401 - fixtures
from PySide6.QtCore import QEvent, QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWebEngineCore import (
    QWebEngineProfile,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from netvlad_gui.core.query.mappage import HTTP_USER_AGENT, MapPageError
from netvlad_gui.ui.mapview import MapView
from netvlad_gui.ui.settingsdialog import AppSettings

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


# ---- antimeridian, zoom and overlapping markers, legend, coverage, tiles (issue 12) -------------

# Every drawn polyline/polygon of a layer group as flat [lng, lat] lists, and the largest step.
# Polygons are closed (last point back to the first). A step along a pole is off the Mercator
# world (|lat| > 85.05) and only closes a fill there, so it does not count.
MAX_JUMP_JS = """(function (group) {
    var worst = 0, rings = 0;
    function step(a, b) {
        if (Math.abs(a.lat) > 85.06 && Math.abs(b.lat) > 85.06) return;
        worst = Math.max(worst, Math.abs(b.lng - a.lng));
    }
    function walk(lls, closed) {
        if (!lls.length) return;
        if (Array.isArray(lls[0])) { lls.forEach(function (l) { walk(l, closed); }); return; }
        rings += 1;
        for (var i = 1; i < lls.length; i++) step(lls[i - 1], lls[i]);
        if (closed) step(lls[lls.length - 1], lls[0]);
    }
    group.eachLayer(function (geo) {
        geo.eachLayer(function (layer) {
            if (layer.getLatLngs) walk(layer.getLatLngs(), layer instanceof L.Polygon);
        });
    });
    return {worst: worst, rings: rings};
})(nv.layers().base)"""

RAW_JUMP_JS = """(function () {
    var worst = 0;
    topojson.feature(nvWorld, nvWorld.objects.countries).features.forEach(function (f) {
        var polys = f.geometry.type === 'Polygon' ? [f.geometry.coordinates]
            : f.geometry.coordinates;
        polys.forEach(function (rings) { rings.forEach(function (ring) {
            for (var i = 1; i < ring.length; i++) {
                worst = Math.max(worst, Math.abs(ring[i][0] - ring[i - 1][0]));
            }
        }); });
    });
    return worst;
})()"""


def test_world_outline_has_no_line_across_the_map(qtbot, view: MapView) -> None:
    assert run_js(qtbot, view, RAW_JUMP_JS) > 300  # the shipped data is stitched at ±180°
    drawn = run_js(qtbot, view, MAX_JUMP_JS)
    assert drawn["rings"] > 1000
    assert drawn["worst"] <= 180  # cut at the antimeridian: no segment spans the world
    # Antarctica is still land down to the pole (its ring was closed along it, not dropped).
    south = run_js(
        qtbot,
        view,
        """(function () { var lowest = 0;
            nv.layers().base.getLayers()[0].eachLayer(function (l) {
                if (l.feature.properties.name !== 'Antarctica') return;
                l.getLatLngs().flat(3).forEach(function (p) { lowest = Math.min(lowest, p.lat); });
            }); return lowest; })()""",
    )
    assert south == -90


def overlap_result() -> dict:
    """Three matches on one spot (a burst of photos) and one a metre away."""
    spot = {"lat": LUND[0] + 0.001, "lon": LUND[1]}
    matches = [{**RESULT["matches"][0], "rank": r, "id": r, **spot} for r in (1, 2, 3)]
    matches.append({**RESULT["matches"][0], "rank": 4, "id": 4, "lat": spot["lat"] + 1e-5})
    return {"query": {**RESULT["query"], "radius_m": None}, "matches": matches}


MARKER_GAPS_JS = """(function () {
    var map = nv.layers().map, pts = [];
    for (var r = 1; r <= 4; r++) pts.push(map.latLngToContainerPoint(nv.matchMarker(r).getLatLng()));
    var gap = Infinity;
    for (var i = 0; i < pts.length; i++) for (var j = i + 1; j < pts.length; j++)
        gap = Math.min(gap, pts[i].distanceTo(pts[j]));
    return gap;
})()"""


def test_overlapping_matches_are_spread_out_even_at_the_deepest_zoom(qtbot, view: MapView) -> None:
    view.show_result(overlap_result())
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().matches") == 4, timeout=5_000)
    ui = run_js(qtbot, view, "nv.ui()")
    assert ui["maxZoom"] >= 19
    for zoom in (ui["maxZoom"], 12):
        view.run_js(
            f"nv.layers().map.setView({[LUND[0] + 0.001, LUND[1]]}, {zoom}, {{animate: false}})"
        )
        qtbot.waitUntil(lambda z=zoom: run_js(qtbot, view, "nv.ui().zoom") == z, timeout=5_000)
        assert run_js(qtbot, view, MARKER_GAPS_JS) >= 24  # the markers are 24 px wide
        assert run_js(qtbot, view, "nv.count().spread") >= 3  # each moved one has a leg
    # A moved marker keeps where its photo was taken (for bounds, legs and the popup).
    true_pos = run_js(qtbot, view, "nv.matchMarker(2).nvTrue")
    assert true_pos == {"lat": LUND[0] + 0.001, "lng": LUND[1]}


def test_legend_explains_the_marks_on_the_map(qtbot, view: MapView) -> None:
    assert run_js(qtbot, view, "nv.ui().legend") == []  # nothing drawn, no legend
    view.set_references(REFERENCES)
    view.show_result(RESULT)
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().matches") == 3, timeout=5_000)
    kinds = run_js(qtbot, view, "nv.ui().legend")
    assert {"prediction", "match", "truth", "coverage"} <= set(kinds)
    assert {"reference", "cluster"} & set(kinds)
    text = run_js(qtbot, view, "document.querySelector('.nv-legend').innerText")
    assert "Predicted position" in text and "Photo's own GPS position" in text
    view.clear(references=True)
    assert run_js(qtbot, view, "nv.ui().legend") == []


def test_references_draw_a_coverage_layer(qtbot, view: MapView) -> None:
    step = 0.0001  # about 11 m: one walk, joined into a track
    walk = [
        {"id": i, "lat": LUND[0] + step * i, "lon": LUND[1], "label": f"walk/{i:02d}.jpg"}
        for i in range(5)
    ]
    lone = {"id": 9, "lat": 10.0, "lon": 10.0, "label": "far.jpg"}
    view.set_references([*walk, lone])
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().references") == 6, timeout=5_000)
    assert run_js(qtbot, view, "nv.count().coverage") == {"points": 6, "tracks": 1}
    # Drawn on its own canvas pane, under the markers.
    assert run_js(qtbot, view, "!!document.querySelector('.leaflet-nvCoverage-pane canvas')")
    view.clear(references=True)
    assert run_js(qtbot, view, "nv.count().coverage") == {"points": 0, "tracks": 0}


def test_offline_hint_offers_online_tiles_through_the_bridge(qtbot, view: MapView) -> None:
    assert run_js(qtbot, view, "nv.ui().hint") is True
    assert not view.tiles_online
    with qtbot.waitSignal(view.onlineTilesRequested, timeout=5_000):
        view.run_js("document.querySelector('.nv-hint .nv-use-tiles').click()")
    # Dismissed, it stays away.
    view.run_js("document.querySelector('.nv-hint .nv-notice-close').click()")
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.ui().hint") is False, timeout=5_000)


def test_tiles_switch_on_and_off_live_and_failures_are_shown(
    qtbot, view: MapView, tile_server: str
) -> None:
    view.set_tiles(True, tile_server, "local test")
    assert view.tiles_online
    # no reload needed; 30 s: on a loaded 2-core machine Chromium took over 10 s to ask
    qtbot.waitUntil(lambda: len(_TileHandler.agents) > 0, timeout=30_000)
    assert run_js(qtbot, view, "nv.ui().hint") is False
    assert run_js(qtbot, view, "nv.count().tiles") is True
    # The server answers 404 to everything: the map says so.
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.ui().tileError") is not None, timeout=10_000)
    assert "127.0.0.1" in run_js(qtbot, view, "nv.ui().tileError")
    assert run_js(qtbot, view, "nv.layers().tiles.options.maxNativeZoom") == 19
    # Dismissed, it stays away while the map goes on failing (panning loads more tiles).
    view.run_js("document.querySelector('.nv-tile-error .nv-notice-close').click()")
    asked = len(_TileHandler.agents)
    view.run_js("nv.layers().map.setView([55.7, 13.2], 12, {animate: false})")
    qtbot.waitUntil(lambda: len(_TileHandler.agents) > asked, timeout=10_000)
    qtbot.wait(300)
    assert run_js(qtbot, view, "nv.ui().tileError") is None

    view.set_tiles(False)
    assert not view.tiles_online
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.ui().hint") is True, timeout=5_000)
    ui = run_js(qtbot, view, "nv.ui()")
    assert ui["tileError"] is None
    assert run_js(qtbot, view, "nv.count().tiles") is False
    with pytest.raises(MapPageError):
        view.set_tiles(True, "javascript:alert(1)")
    assert not view.tiles_online


@pytest.mark.usefixtures("isolated_settings", "delete_later")
def test_the_window_applies_the_tile_setting_at_once(qtbot, tile_server: str) -> None:
    store = QSettings()
    store.setValue("settings/tile_url", tile_server)  # never the real tile server in tests
    store.sync()
    win = open_window(qtbot)
    qtbot.waitUntil(lambda: win.map.is_ready, timeout=LOAD_TIMEOUT_MS)
    assert not win.map.tiles_online
    # The hint's "Use online map tiles" (through the bridge) sets and saves the setting.
    win.map.run_js("document.querySelector('.nv-hint .nv-use-tiles').click()")
    qtbot.waitUntil(lambda: win.map.tiles_online, timeout=5_000)
    assert win.settings.online_tiles
    assert QSettings().value("settings/online_tiles") in (True, "true")
    qtbot.waitUntil(lambda: len(_TileHandler.agents) > 0, timeout=10_000)  # no restart
    # Settings → off: the tiles go at once, and the hint comes back.
    new = AppSettings(**win.settings.__dict__)
    new.online_tiles = False
    win.apply_settings(new)
    assert not win.map.tiles_online
    qtbot.waitUntil(lambda: run_js(qtbot, win.map, "nv.ui().hint") is True, timeout=5_000)
    # A malformed URL is reported, not raised.
    new = AppSettings(**win.settings.__dict__)
    new.online_tiles, new.tile_url = True, "https://example.org/tile.png"
    win.apply_settings(new)
    assert not win.map.tiles_online
    assert "tile URL" in win.notice.text


def test_library_photos_on_one_spot_spread_out_on_click_at_the_deepest_zoom(
    qtbot, view: MapView
) -> None:
    burst = [{"id": i, "lat": LUND[0], "lon": LUND[1], "label": f"burst_{i}.jpg"} for i in range(3)]
    view.set_references(burst)
    view.run_js(f"nv.layers().map.setView({list(LUND)}, 20, {{animate: false}})")
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.ui().zoom") == 20, timeout=5_000)
    cluster_js = "nv.layers().references.getVisibleParent(nv.layers().references.getLayers()[0])"
    assert run_js(qtbot, view, f"{cluster_js}.getChildCount()") == 3

    def click_spreads() -> bool:
        # A real click bubbles to the group; it is ignored while the group still animates the
        # zoom (about 200 ms), so click until it spreads.
        view.run_js(f"{cluster_js}.fire('click', {{}}, true)")
        return run_js(qtbot, view, "!!nv.layers().references._spiderfied")

    qtbot.waitUntil(click_spreads, timeout=5_000)


def test_a_bad_saved_tile_url_starts_the_map_offline(qtbot) -> None:
    view = make_view(qtbot, tiles_online=True, tile_url="https://example.org/no-zxy.png")
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    assert not view.tiles_online
    assert run_js(qtbot, view, "nv.ui().hint") is True


def test_a_not_found_photo_is_drawn_as_a_grey_guess(qtbot, view: MapView) -> None:
    """Issue 11: a photo not in the library gets no circle and a grey "guess" mark, and the
    legend says so; a located photo keeps the red predicted position."""
    query = {**RESULT["query"], "verdict": "not_found", "guess": True, "radius_m": None}
    guess = {**RESULT, "query": query}
    view.show_result(guess)
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().matches") == 3, timeout=5_000)
    assert (
        run_js(qtbot, view, "document.querySelectorAll('.leaflet-marker-pane .nv-guess').length")
        == 1
    )
    kinds = run_js(qtbot, view, "nv.ui().legend")
    assert "guess" in kinds and "prediction" not in kinds
    text = run_js(qtbot, view, "document.querySelector('.nv-legend').innerText")
    assert "Nearest guess" in text
    view.show_result(RESULT)
    qtbot.waitUntil(lambda: "prediction" in run_js(qtbot, view, "nv.ui().legend"), timeout=5_000)
    assert (
        run_js(qtbot, view, "document.querySelectorAll('.leaflet-marker-pane .nv-guess').length")
        == 0
    )


# ---- issue 23: the first view shows the evidence ----------------------------------------------

M_LAT = 1 / 111_320  # degrees of latitude per metre
M_LON = M_LAT / 0.5637  # degrees of longitude per metre at Lund (cos 55.7°)
PIXEL_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAH"
    "ggJ/PchI7wAAAABJRU5ErkJggg=="
)


def lund_like(truth_m: tuple[float, float] = (1.0, 0.0)) -> dict:
    """As a lund query comes back: ±10 m, its own GPS a metre off, five matches 2-20 m away."""
    offsets = [(3.0, 1.0), (-2.0, 12.0), (5.0, -4.0), (-9.0, -6.0), (0.0, 20.0)]
    return {
        "query": {
            "label": "02.jpg",
            "lat": LUND[0],
            "lon": LUND[1],
            "radius_m": 10.0,
            "confidence": 1.0,
            "true_lat": LUND[0] + truth_m[0] * M_LAT,
            "true_lon": LUND[1] + truth_m[1] * M_LON,
            "error_m": 1.0,
        },
        "matches": [
            {
                "rank": r,
                "id": r,
                "lat": LUND[0] + dy * M_LAT,
                "lon": LUND[1] + dx * M_LON,
                "label": f"{r:02d}.jpg",
                "score": 0.9,
                "distance_m": 5.0,
                "thumb_url": PIXEL_PNG,
            }
            for r, (dx, dy) in enumerate(offsets, 1)
        ],
    }


EVIDENCE_JS = """(function () {
    var map = nv.layers().map, size = map.getSize(), L_ = nv.layers();
    function at(marker) { var p = map.latLngToContainerPoint(marker.getLatLng()); return [p.x, p.y]; }
    var out = {size: [size.x, size.y], zoom: map.getZoom(), matches: [], pred: at(L_.prediction),
               truth: L_.truth ? at(L_.truth) : null, circle: null};
    for (var r = 1; r <= 5; r++) out.matches.push(at(nv.matchMarker(r)));
    L_.result.eachLayer(function (l) {
        if (l instanceof L.Circle) {
            var b = l.getBounds();
            out.circle = (map.latLngToContainerPoint(b.getNorthEast()).x -
                          map.latLngToContainerPoint(b.getSouthWest()).x) / 2;
        }
    });
    return out;
})()"""


def evidence(qtbot, view: MapView, result: dict) -> dict:
    view.show_result(result)
    qtbot.waitUntil(lambda: run_js(qtbot, view, "nv.count().matches") == 5, timeout=5_000)
    return run_js(qtbot, view, EVIDENCE_JS)


def within(point, size, margin: float) -> bool:
    return margin <= point[0] <= size[0] - margin and margin <= point[1] <= size[1] - margin


def gap(a, b) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def test_the_first_view_keeps_the_circle_and_own_gps_in_sight(qtbot) -> None:
    """At the first zoom the matches ring the prediction outside its ±10 m circle and off the
    own-GPS diamond, every marker whole inside the (small) map."""
    view = make_view(qtbot)
    view.resize(620, 380)  # the map at 1280x720 with the Retrain panel docked
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    for truth in ((1.0, 0.0), (0.0, 13.0)):  # beside the prediction; just outside its circle
        e = evidence(qtbot, view, lund_like(truth))
        assert e["zoom"] >= 17  # close enough to see which street
        assert e["circle"] >= 15  # the circle is seen, not a dot under the markers
        for m in e["matches"]:
            assert within(m, e["size"], 12)  # a 24 px marker is not cut off at an edge
            assert gap(m, e["pred"]) >= e["circle"] + 12 - 0.5  # off the circle
            assert gap(m, e["truth"]) >= 12 + 13 - 0.5  # off the own-GPS diamond
        for i, a in enumerate(e["matches"]):
            assert all(gap(a, b) >= 24 for b in e["matches"][i + 1 :])
    # The legend starts collapsed on a map this small (its title opens it).
    ui = run_js(qtbot, view, "nv.ui()")
    assert ui["legendCollapsed"] and "match" in ui["legend"]
    view.resize(900, 640)
    qtbot.waitUntil(lambda: not run_js(qtbot, view, "nv.ui().legendCollapsed"), timeout=5_000)


def test_a_far_away_guess_and_its_popups_stay_inside_the_map(qtbot) -> None:
    """A photo from far away guessed in Lund: the ring round the guess at the top of the
    fitted view is not cut off at the map's top edge, nor is a match's popup. (Its own GPS is
    put where the fit is tight: the whole height at a whole zoom.)"""
    view = make_view(qtbot)
    view.resize(620, 380)
    with qtbot.waitSignal(view.ready, timeout=LOAD_TIMEOUT_MS):
        pass
    far = lund_like()
    far["query"].update(
        radius_m=None, guess=True, verdict="not_found", true_lat=53.62, true_lon=13.4004
    )
    e = evidence(qtbot, view, far)
    assert e["zoom"] <= 8
    for point in (*e["matches"], e["pred"], e["truth"]):
        assert within(point, e["size"], 12)
    view.select(1)
    popup_js = """(function () {
        var p = document.querySelector('.leaflet-popup'), m = nv.layers().map.getContainer();
        if (!p) return null;
        var a = p.getBoundingClientRect(), b = m.getBoundingClientRect();
        return [a.top - b.top, a.left - b.left, b.right - a.right, b.bottom - a.bottom];
    })()"""
    qtbot.waitUntil(lambda: run_js(qtbot, view, popup_js) is not None, timeout=5_000)
    qtbot.waitUntil(lambda: min(run_js(qtbot, view, popup_js)) >= 0, timeout=5_000)
    img = run_js(qtbot, view, "document.querySelector('.leaflet-popup img.nv-thumb').height")
    assert img == 165  # its box is sized before the photo loads
