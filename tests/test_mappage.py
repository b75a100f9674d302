"""The offline map page (no Qt): local assets only, no CDN, data escaped for <script>."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from netvlad_gui.core.query import mappage
from netvlad_gui.core.query.mappage import (
    DEFAULT_TILE_URL,
    QWEBCHANNEL_JS,
    MapAssetsMissingError,
    MapPageError,
    js_call,
    reference_coverage,
    tile_config,
    to_js,
    write_map_page,
)

URL_RE = re.compile(r"https?://[^\s\"'<>)\\]+")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def offline_page(tmp_path: Path) -> str:
    return write_map_page(tmp_path).read_text(encoding="utf-8")


def test_offline_page_has_no_network_url(offline_page: str) -> None:
    assert URL_RE.findall(offline_page) == []
    for cdn_thing in ("jquery", "bootstrap", "awesome", "fontawesome", "cdn"):
        assert cdn_thing not in offline_page.lower()


def test_page_references_only_existing_local_files(tmp_path: Path) -> None:
    html = write_map_page(tmp_path).read_text(encoding="utf-8")
    urls = _links(html)
    assert len(urls) >= 10
    for url in urls:
        if url == QWEBCHANNEL_JS:
            continue  # Qt's built-in resource
        parsed = urlparse(url)
        assert parsed.scheme == "file", url
        assert Path(unquote(parsed.path)).is_file(), url
    world = tmp_path / "world.js"
    assert f'src="{world.resolve().as_uri()}"' in html
    text = world.read_text(encoding="utf-8")
    assert text.startswith("window.nvWorld = ")
    topo = json.loads(text.removeprefix("window.nvWorld = ").rstrip().rstrip(";"))
    assert topo["type"] == "Topology" and "countries" in topo["objects"]


def test_page_loads_vendored_leaflet_and_scale(offline_page: str) -> None:
    assert "leaflet.js" in offline_page and "leaflet.markercluster.js" in offline_page
    assert "topojson-client.min.js" in offline_page
    assert "L.control.scale()" in offline_page
    assert '"tiles_online": false' in offline_page


def test_online_tiles_add_only_tile_and_attribution_urls(tmp_path: Path) -> None:
    html = write_map_page(tmp_path, tiles_online=True).read_text(encoding="utf-8")
    found = set(URL_RE.findall(html))
    assert found == {DEFAULT_TILE_URL, "https://www.openstreetmap.org/copyright"}


def test_bad_tile_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MapPageError, match="tile URL"):
        write_map_page(tmp_path, tiles_online=True, tile_url="javascript:alert(1)")
    with pytest.raises(MapPageError):
        write_map_page(tmp_path, tiles_online=True, tile_url="https://example.org/tile.png")
    # Offline, the tile URL is not used, so it is not checked either.
    write_map_page(tmp_path, tiles_online=False, tile_url="nonsense")


def test_config_cannot_close_the_script_element(tmp_path: Path) -> None:
    evil = "</script><script>window.pwned=1</script>"
    html = write_map_page(tmp_path, tiles_online=True, attribution=evil).read_text(encoding="utf-8")
    assert evil not in html
    assert "<\\/script><script>window.pwned=1<\\/script>" in html


def test_to_js_escapes_and_round_trips() -> None:
    label = "</script><img src=x onerror=window.pwned=2>\u2028"
    out = to_js({"label": label})
    assert "</" not in out and "\u2028" not in out
    assert json.loads(out) == {"label": label}


def test_to_js_cleans_numpy_nan_and_paths() -> None:
    value = {"a": np.float32(1.5), "b": math.nan, "c": [np.int64(3), math.inf], "d": Path("/x")}
    assert json.loads(to_js(value)) == {"a": 1.5, "b": None, "c": [3, None], "d": "/x"}


def test_js_call_builds_a_call_and_rejects_odd_names() -> None:
    assert js_call("select", 3) == "window.nv.select(3)"
    assert js_call("fitAll") == "window.nv.fitAll()"
    with pytest.raises(MapPageError):
        js_call("select(1);alert", 1)


def test_missing_asset_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mappage, "web_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(MapAssetsMissingError, match="vendor.sh"):
        write_map_page(tmp_path / "out")


def test_page_script_never_uses_inner_html() -> None:
    for name in ("nvmap.js", "nvcontrols.js", "nvgeo.js"):
        script = (mappage.web_dir() / name).read_text(encoding="utf-8")
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script, name
    assert "textContent" in (mappage.web_dir() / "nvmap.js").read_text(encoding="utf-8")


def test_vendored_files_have_licences() -> None:
    web = mappage.web_dir()
    for name in ("leaflet", "leaflet.markercluster", "topojson-client", "world-atlas"):
        assert (web / "licenses" / f"{name}-LICENSE").is_file()
    notes = (web / "VENDORED.md").read_text(encoding="utf-8")
    for package in ("leaflet", "leaflet.markercluster", "topojson-client", "world-atlas"):
        assert package in notes
    for name in ("marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"):
        assert (web / "images" / name).is_file()


def test_tile_config_checks_the_url_only_when_online() -> None:
    assert tile_config(False, "nonsense") == {"online": False}
    on = tile_config(True, DEFAULT_TILE_URL, "by someone")
    assert on == {"online": True, "url": DEFAULT_TILE_URL, "attribution": "by someone"}
    with pytest.raises(MapPageError, match="tile URL"):
        tile_config(True, "file:///{z}/{x}/{y}.png")


def _ref(label: str, lat: float | None, lon: float | None) -> dict:
    return {"id": label, "lat": lat, "lon": lon, "label": label}


def test_reference_coverage_joins_photos_in_file_order_within_the_gap() -> None:
    step = 0.0001  # about 11 m of latitude
    refs = [
        _ref("walk/img10.jpg", 55.0 + 2 * step, 13.0),  # natural order: img2 < img3 < img10
        _ref("walk/img2.jpg", 55.0, 13.0),
        _ref("walk/img3.jpg", 55.0 + step, 13.0),
        _ref("walk/img11.jpg", 55.01, 13.0),  # about 1.1 km further: a new run
        _ref("walk/img12.jpg", 55.01 + step, 13.0),
        _ref("walk/img13.jpg", 40.0, 0.0),  # alone: a dot, no track
    ]
    cov = reference_coverage(refs)
    assert cov["tracks"] == [
        [[55.0, 13.0], [55.0001, 13.0], [55.0002, 13.0]],
        [[55.01, 13.0], [55.0101, 13.0]],
    ]
    assert len(cov["points"]) == 6 and [40.0, 0.0] in cov["points"]
    # A tighter gap leaves only dots.
    assert reference_coverage(refs, max_gap_m=5.0)["tracks"] == []


def test_reference_coverage_skips_bad_positions_and_draws_repeats_once() -> None:
    refs = [
        _ref("a.jpg", 55.0, 13.0),
        _ref("b.jpg", 55.0, 13.0),  # same spot (a burst): one dot, no zero-length track
        _ref("c.jpg", None, 13.0),
        _ref("d.jpg", 95.0, 13.0),
        _ref("e.jpg", math.nan, 13.0),
        _ref("f.jpg", np.float64(55.0001), np.float32(13.0)),
    ]
    cov = reference_coverage(refs)
    assert len(cov["points"]) == 2
    assert cov["tracks"] == [[[55.0, 13.0], [55.0001, 13.0]]]
    json.loads(to_js(cov))  # plain JSON for the page
    assert reference_coverage([]) == {"points": [], "tracks": []}


def test_shipped_borders_are_stitched_across_the_antimeridian() -> None:
    """The vendored world-atlas data is stitched across ±180° (the cause of the stray lines), so
    the page must cut it: test_mapview checks that nothing drawn jumps across the map."""
    topo = json.loads((mappage.web_dir() / "countries-50m.json").read_text(encoding="utf-8"))
    sx = topo["transform"]["scale"][0]
    jumps = 0
    for arc in topo["arcs"]:
        x, last = 0, None
        for dx, _ in arc:
            x += dx
            if last is not None and abs(x - last) * sx > 180:
                jumps += 1
            last = x
    assert jumps > 0


def test_reference_coverage_of_a_huge_library_is_drawn_on_a_coarser_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mappage, "MAX_COVERAGE_POINTS", 50)
    # 400 photos 1 m apart along a street: too many dots for the cap at 1 m, fine at 11 m.
    refs = [_ref(f"{i:04d}.jpg", 55.0 + i * 0.00001, 13.0) for i in range(400)]
    cov = reference_coverage(refs)
    assert 0 < len(cov["points"]) <= 50
    assert len(cov["tracks"]) == 1 and cov["tracks"][0][0] == [55.0, 13.0]
