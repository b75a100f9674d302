"""CSV and GeoJSON export of locate results (pure Python, no Qt)."""

from __future__ import annotations

import csv
import json

import pytest

from netvlad_gui.core.query.export import (
    ExportError,
    to_geojson,
    write_csv,
    write_geojson,
    write_results,
)
from netvlad_gui.core.query.locate import LocateResult, Match


def _results() -> list[LocateResult]:
    located = LocateResult(
        query='/photos/a,b "q".jpg',
        lat=55.6982559,
        lon=13.1952007,
        confidence=0.8787,
        radius_m=13.03,
        error_m=1.58,
        true_lat=55.6982417,
        true_lon=13.1952,
        matches=[
            Match(1, "/lib/03.jpg", 55.6982639, 13.1951389, 0.4041, 3.97, 2, True, inliers=87),
            Match(2, "/lib/21.jpg", 55.6992111, 13.1946778, 0.2173, 111.2, 14, False, inliers=4),
        ],
        verdict="located",
        verdict_reason="87 matching points with the best match",
        verified=True,
    )
    no_gps_matches = LocateResult(
        query="/photos/b.jpg",
        matches=[Match(1, "/lib/x.jpg", None, None, 0.3, None, 7)],
        verdict="not_found",
    )
    broken = LocateResult(query="/photos/broken.jpg", error="corrupt or truncated image")
    return [located, no_gps_matches, broken]


def test_csv_round_trips_through_the_csv_module(tmp_path) -> None:
    path = write_csv(_results(), tmp_path / "out.csv")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["query"] for r in rows] == [r.query for r in _results()]
    first = rows[0]
    assert float(first["lat"]) == pytest.approx(55.6982559)
    assert float(first["lon"]) == pytest.approx(13.1952007)
    assert float(first["error_m"]) == pytest.approx(1.6)
    assert first["top1_path"] == "/lib/03.jpg" and first["matches"] == "2"
    assert rows[1]["lat"] == "" and rows[1]["confidence"] == "" and rows[1]["matches"] == "1"
    assert rows[2]["error"] == "corrupt or truncated image" and rows[2]["top1_path"] == ""


def test_geojson_has_one_feature_per_photo_in_lon_lat_order(tmp_path) -> None:
    path = write_geojson(_results(), tmp_path / "out.geojson")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 3
    first, second, third = data["features"]
    assert first["geometry"] == {"type": "Point", "coordinates": [13.1952007, 55.6982559]}
    assert first["properties"]["confidence"] == pytest.approx(0.8787)
    assert [m["rank"] for m in first["properties"]["matches"]] == [1, 2]
    assert first["properties"]["matches"][0]["agrees"] is True
    assert second["geometry"] is None and second["properties"]["matches"][0]["lat"] is None
    assert third["geometry"] is None and third["properties"]["error"].startswith("corrupt")
    assert to_geojson([]) == {"type": "FeatureCollection", "features": []}


def test_write_results_picks_the_format_and_refuses_others(tmp_path) -> None:
    assert write_results(_results(), tmp_path / "a.CSV").read_text().startswith("query,lat")
    assert json.loads(write_results(_results(), tmp_path / "a.json").read_text())["features"]
    with pytest.raises(ExportError, match="use a .csv or .geojson"):
        write_results(_results(), tmp_path / "a.xlsx")
    with pytest.raises(ExportError, match="cannot write"):
        write_csv(_results(), tmp_path / "missing" / "a.csv")
    assert not list(tmp_path.glob(".*tmp*"))


def test_export_carries_the_verdict_and_the_top_match_inliers(tmp_path) -> None:
    rows = list(csv.DictReader(write_csv(_results(), tmp_path / "v.csv").open(encoding="utf-8")))
    assert [r["verdict"] for r in rows] == ["located", "not_found", ""]
    assert [r["top1_inliers"] for r in rows] == ["87", "", ""]
    assert [r["verdict_reason"] for r in rows] == ["87 matching points with the best match", "", ""]
    feats = to_geojson(_results())["features"]
    assert feats[0]["properties"]["verdict"] == "located"
    assert feats[0]["properties"]["top1_inliers"] == 87
    assert [m["inliers"] for m in feats[0]["properties"]["matches"]] == [87, 4]
    assert feats[1]["properties"]["verdict"] == "not_found"
    assert feats[1]["properties"]["matches"][0]["inliers"] is None
    assert feats[2]["properties"]["verdict"] is None


# -- issue 23: exports opened in a map or a geotagger -----------------------------------------
def _not_found_with_a_guess() -> LocateResult:
    """A photo from far away: its nearest match is in Lund, which is no answer."""
    return LocateResult(
        query="/photos/arezzo.jpg",
        lat=55.6982639,
        lon=13.1951389,
        confidence=0.05,
        radius_m=31.0,
        matches=[Match(1, "/lib/03.jpg", 55.6982639, 13.1951389, 0.21, 0.0, 2, True, inliers=3)],
        verdict="not_found",
        verified=True,
    )


def test_a_not_found_photo_carries_no_coordinates_only_a_guess(tmp_path) -> None:
    results = [*_results(), _not_found_with_a_guess()]
    path = write_csv(results, tmp_path / "out.csv")
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header.index("verdict") <= 3  # early, next to the coordinates it qualifies
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    located, row = rows[0], rows[-1]
    assert row["verdict"] == "not_found"
    assert row["lat"] == row["lon"] == row["radius_m"] == ""  # nothing a map would place
    assert float(row["guess_lat"]) == pytest.approx(55.6982639)
    assert float(row["guess_lon"]) == pytest.approx(13.1951389)
    assert located["guess_lat"] == "" and float(located["lat"]) == pytest.approx(55.6982559)
    feature = to_geojson(results)["features"][-1]
    assert feature["geometry"] is None
    props = feature["properties"]
    assert props["verdict"] == "not_found" and props["guess_lat"] == pytest.approx(55.6982639)
    assert "lat" not in props and "lon" not in props


def test_a_non_utf8_photo_name_does_not_spoil_the_export(tmp_path) -> None:
    odd = LocateResult(
        query="/photos/caf\udce9.jpg",  # a Latin-1 name on disk, as Python holds it
        lat=55.7,
        lon=13.2,
        confidence=0.9,
        radius_m=10.0,
        matches=[Match(1, "/lib/\udcff.jpg", 55.7, 13.2, 0.5, 0.0, 1, True)],
        verdict="located",
    )
    rows = list(csv.DictReader(write_csv([odd], tmp_path / "a.csv").open(encoding="utf-8")))
    assert rows[0]["query"] == "/photos/caf\ufffd.jpg" and rows[0]["top1_path"] == "/lib/\ufffd.jpg"
    data = json.loads(write_geojson([odd], tmp_path / "a.geojson").read_text(encoding="utf-8"))
    assert data["features"][0]["properties"]["matches"][0]["path"] == "/lib/\ufffd.jpg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.geojson"]  # no .tmp


def test_an_export_onto_a_read_only_file_system_names_the_users_file(tmp_path, monkeypatch):
    import errno
    import os
    from pathlib import Path

    real_open = os.open

    def read_only(path, *args, **kwargs):  # EROFS: even unlinking a missing file is refused
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    def no_unlink(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(Path, "unlink", no_unlink)
    with pytest.raises(ExportError) as err:
        write_csv(_results(), tmp_path / "out.csv")
    assert str(err.value).startswith(f"cannot write {tmp_path / 'out.csv'}: Read-only file system")
    assert "\n" not in str(err.value)
