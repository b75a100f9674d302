"""Geotag reading (EXIF, XMP, gps.csv) and metric neighbourhoods."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from _shared import SHARED_DIR  # tests/ is on sys.path; conftest.py provides `shared_dir`
from PIL import Image

from netvlad_gui.core.errors import GeoError
from netvlad_gui.core.photos import geo
from netvlad_gui.core.photos.distance import EARTH_RADIUS_M, GeoNeighbours, haversine_m
from netvlad_gui.core.photos.geo import (
    GeoPoint,
    GpsResult,
    load_sidecar_csv,
    read_exif_gps,
    read_gps,
    read_xmp_gps,
)

EXIF_DIR = SHARED_DIR / "data" / "exif"
LUND_DIR = SHARED_DIR / "data" / "lund_street"

# --- the shared exif folder, file by file ---------------------------------------------------

README_CORRUPT_GPS = (48.0810453, -1.6678411)
#: Expectations the manifest does not carry (it records EXIF only) or gets from the README.
EXTRA_EXPECTED = {
    "edge_cases/mapillary_tools/adobe_coords.jpg": ("xmp", -0.070267, 34.381935),
    # The README says "corrupt_exif*.jpg" hold GPS; only these two do. The other three
    # (large_thumbnail, *wrong_type) have no GPS IFD at all (checked with exifread and Pillow).
    "edge_cases/mapillary_tools/corrupt_exif.jpg": ("exif", *README_CORRUPT_GPS),
    "edge_cases/mapillary_tools/corrupt_exif_2.jpg": ("exif", *README_CORRUPT_GPS),
}
#: A GPS block is present but garbage (README): must be refused, naming the bad value.
GARBAGE = {
    "edge_cases/pillow/exif_gps.jpg": "latitude 4294967295 out of range",
    "edge_cases/piexif/01.jpg": "latitude 4294967295 out of range",
}


def _manifest() -> dict[str, tuple[str, float, float]]:
    expected = {}
    with open(EXIF_DIR / "manifest.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["exif_gps_latlon"]:
                lat, lon = (float(v) for v in row["exif_gps_latlon"].split(","))
                expected[row["file"]] = ("exif", lat, lon)
    return expected


EXIF_FILES = (
    sorted(p.relative_to(EXIF_DIR).as_posix() for p in EXIF_DIR.rglob("*") if p.is_file())
    if EXIF_DIR.is_dir()
    else []
)


@pytest.mark.parametrize("rel", EXIF_FILES)
def test_exif_folder_file_by_file(shared_dir: Path, rel: str) -> None:
    expected = {**_manifest(), **EXTRA_EXPECTED}
    assert not set(GARBAGE) & set(expected), "manifest gives GPS for a garbage file"
    path = EXIF_DIR / rel
    exif, xmp = read_exif_gps(path), read_xmp_gps(path)  # neither may raise
    result = read_gps(path)
    assert isinstance(exif, GpsResult) and isinstance(xmp, GpsResult)
    if rel in expected:
        source, lat, lon = expected[rel]
        assert result.ok, result.describe()
        assert result.source == source and result.reason == ""
        assert result.point.lat == pytest.approx(lat, abs=1e-5)
        assert result.point.lon == pytest.approx(lon, abs=1e-5)
        assert result.describe().endswith(f"({source})")
    else:
        assert not result.ok and result.point is None and result.source == ""
        assert result.reason and result.describe().startswith("no usable GPS: ")
        assert "exif: " in result.reason and "xmp: " in result.reason
        if rel in GARBAGE:
            assert GARBAGE[rel] in result.reason


def test_exif_folder_altitudes(shared_dir: Path) -> None:
    alts = {
        "edge_cases/mapillary_tools/test_exif.jpg": 69.0,
        "gps_photos/mapillary_tools/DSC00001.JPG": 70.3,  # MPO
        "gps_photos/opensfm_berlin/01.jpg": 27.0,  # no GPSAltitudeRef: above sea level
        "edge_cases/mapillary_tools/adobe_coords.jpg": 1361.69,  # from XMP
        "edge_cases/mapillary_tools/corrupt_exif.jpg": None,  # AltitudeRef without altitude
    }
    for rel, alt in alts.items():
        point = read_gps(EXIF_DIR / rel).point
        assert point is not None and point.alt == pytest.approx(alt), rel


def test_exif_folder_distances_match_readme(shared_dir: Path) -> None:
    berlin = [read_gps(EXIF_DIR / f"gps_photos/opensfm_berlin/0{i}.jpg").point for i in (1, 2, 3)]
    d = haversine_m(*np.array([(a.lat, a.lon, b.lat, b.lon) for a in berlin for b in berlin]).T)
    off_diagonal = d.reshape(3, 3)[~np.eye(3, dtype=bool)]
    assert 6.0 < off_diagonal.min() and off_diagonal.max() < 18.5
    p, q = (
        read_gps(EXIF_DIR / f"gps_photos/mapillary_tools/DSC00{n}.JPG").point
        for n in ("001", "497")
    )
    assert haversine_m(p.lat, p.lon, q.lat, q.lon) == pytest.approx(733, abs=10)


# --- lund_street: EXIF against its gps.csv ---------------------------------------------------


def test_lund_exif_matches_sidecar(shared_dir: Path) -> None:
    sidecar = load_sidecar_csv(LUND_DIR)
    files = sorted(p for p in LUND_DIR.rglob("*.jpg"))
    assert len(sidecar) == len(files) == 24
    for path in files:
        key = path.relative_to(LUND_DIR).as_posix()
        result = read_gps(path, root=LUND_DIR)
        assert result.source == "exif", result.describe()
        assert result.point.lat == pytest.approx(sidecar[key].lat, abs=1e-6)
        assert result.point.lon == pytest.approx(sidecar[key].lon, abs=1e-6)
        assert result.point.alt == pytest.approx(sidecar[key].alt, abs=0.5)


def test_lund_queries_have_references_within_25m(shared_dir: Path) -> None:
    sidecar = load_sidecar_csv(LUND_DIR)
    refs = sorted(k for k in sidecar if k.startswith("references/"))
    queries = sorted(k for k in sidecar if k.startswith("queries/"))
    tree = GeoNeighbours([sidecar[k].lat for k in refs], [sidecar[k].lon for k in refs])
    near = tree.query_many([sidecar[k].lat for k in queries], [sidecar[k].lon for k in queries], 25)
    assert len(tree) == 19 and len(near) == 5
    assert all(3 <= len(n) <= 8 for n in near)  # README: 3-8 references within 25 m each


# --- files made here: sidecar, odd names ----------------------------------------------------


def _plain_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 120, 150)).save(path, "JPEG")
    return path


def _write_csv(root: Path, text: str) -> None:
    (root / "gps.csv").write_text(text, encoding="utf-8")


ODD_NAMES = ["with space.jpg", "sub dir/café ü 東京.jpg", "a,comma.jpg"]


def test_sidecar_fallback_with_odd_names(tmp_path: Path) -> None:
    rows = ["file,lat,lon,alt_m"]
    for i, name in enumerate(ODD_NAMES):
        _plain_jpeg(tmp_path / name)
        quoted = f'"{name}"' if "," in name else name
        rows.append(f"{quoted},{10 + i}.5,{-20 - i}.25,{i or ''}")
    _write_csv(tmp_path, "\n".join(rows) + "\n")
    for i, name in enumerate(ODD_NAMES):
        result = read_gps(tmp_path / name, root=tmp_path)
        assert result.source == "csv", result.describe()
        assert result.point == GeoPoint(10 + i + 0.5, -20 - i - 0.25, float(i) if i else None)
        assert result.describe() == f"{10 + i + 0.5:.6f}, {-20 - i - 0.25:.6f} (csv)"
    # an explicit sidecar dict and a relative root work the same way
    sidecar = load_sidecar_csv(tmp_path)
    assert read_gps(tmp_path / ODD_NAMES[1], root=tmp_path, sidecar=sidecar).ok


def test_sidecar_decomposed_unicode_and_backslashes(tmp_path: Path) -> None:
    name = unicodedata.normalize("NFD", "sub/Malmö é.jpg")  # as macOS stores it
    _plain_jpeg(tmp_path / name)
    _write_csv(tmp_path, "\ufefffile,lat,lon\r\n.\\sub\\Malmö é.jpg,55.6,13.0\r\n")  # BOM, CRLF
    result = read_gps(tmp_path / name, root=tmp_path)
    assert result.source == "csv" and result.point == GeoPoint(55.6, 13.0)


def test_exif_wins_over_sidecar_and_names_with_spaces(shared_dir: Path, tmp_path: Path) -> None:
    src = LUND_DIR / "references" / "01.jpg"
    dst = tmp_path / "ünï cødé (1).jpg"
    dst.write_bytes(src.read_bytes())
    _write_csv(tmp_path, f"file,lat,lon\n{dst.name},1.0,2.0\n")
    result = read_gps(dst, root=tmp_path)
    assert result.source == "exif" and result.point.lat == pytest.approx(55.69816667, abs=1e-6)


def test_no_gps_anywhere_names_each_source(tmp_path: Path) -> None:
    path = _plain_jpeg(tmp_path / "x.jpg")
    _write_csv(tmp_path, "file,lat,lon\nother.jpg,1,2\n")
    result = read_gps(path, root=tmp_path)
    assert not result.ok
    assert (
        result.reason
        == "exif: no EXIF data; xmp: no XMP packet; csv: 'x.jpg' not listed in gps.csv"
    )
    assert read_gps(path).reason == "exif: no EXIF data; xmp: no XMP packet"  # csv not consulted
    outside = read_gps(path, root=tmp_path / "elsewhere")
    assert "not under the library root" in outside.reason


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    assert read_gps(tmp_path / "nope.jpg").reason == "file not found"
    assert read_gps(tmp_path).reason == "not a file"
    assert read_exif_gps(tmp_path / "nope.jpg").reason.startswith("cannot read file")
    assert read_xmp_gps(tmp_path).reason.startswith("cannot read file")
    assert not read_gps("bad\0name.jpg").ok
    assert read_exif_gps("bad\0name.jpg").reason.startswith("cannot read file")


def test_sidecar_bad_rows_skipped_with_line_numbers(tmp_path: Path, caplog) -> None:
    _write_csv(
        tmp_path,
        "File, Lat ,LON,alt_m,extra\n"
        "ok.jpg,1.5,2.5,-3,x\n"  # line 2
        "far.jpg,91,2,,\n"  # 3
        "nolon.jpg,1\n"  # 4
        "text.jpg,abc,2\n"  # 5
        "null.jpg,0,0\n"  # 6
        "nan.jpg,nan,2\n"  # 7
        ",1,2\n"  # 8
        "badalt.jpg,1,2,high\n"  # 9
        "ok.jpg,1.5,2.75\n",  # 10: listed again, later row wins
    )
    with caplog.at_level(logging.WARNING, logger="netvlad_gui.core.photos.geo"):
        points = load_sidecar_csv(tmp_path)
    assert points == {"ok.jpg": GeoPoint(1.5, 2.75), "badalt.jpg": GeoPoint(1.0, 2.0)}
    text = caplog.text
    for line in (3, 4, 5, 6, 7, 8, 9, 10):
        assert f"line {line}:" in text
    assert "null island" in text and "out of range" in text


def test_sidecar_missing_or_without_columns(tmp_path: Path, caplog) -> None:
    assert load_sidecar_csv(tmp_path) == {}
    assert load_sidecar_csv(tmp_path / "no such dir") == {}
    _write_csv(tmp_path, "name,latitude,longitude\na.jpg,1,2\n")
    with caplog.at_level(logging.WARNING, logger="netvlad_gui.core.photos.geo"):
        assert load_sidecar_csv(tmp_path) == {}
    assert "no column file, lat, lon" in caplog.text
    (tmp_path / "gps.csv").write_bytes(b"file,lat,lon\n\xff\xfe\xfa,1,2\n")
    # not UTF-8: read as cp1252 with a warning (it once dropped every row, issue 13 item 14)
    assert load_sidecar_csv(tmp_path) == {"\xff\xfe\xfa": GeoPoint(1.0, 2.0)}


def test_sidecar_empty_file_names_skipped_each_with_its_own_reason(tmp_path, caplog) -> None:
    # The first data row without a name once raised UnboundLocalError, and later nameless rows
    # were logged with the previous bad row's reason.
    _write_csv(tmp_path, "file,lat,lon\n,1,2\nfar.jpg,91,2\n  ,3,4\nok.jpg,5,6\n")
    with caplog.at_level(logging.WARNING, logger="netvlad_gui.core.photos.geo"):
        points = load_sidecar_csv(tmp_path)
    assert points == {"ok.jpg": GeoPoint(5.0, 6.0)}
    by_line = {r.args[1]: r.getMessage() for r in caplog.records}
    assert by_line[2].endswith("line 2: no file name; row skipped")
    assert "latitude 91 out of range" in by_line[3]
    assert by_line[4].endswith("line 4: no file name; row skipped")


def test_sidecar_in_cp1252_keeps_every_good_row(tmp_path, caplog) -> None:
    """A Windows-saved gps.csv (cp1252) once lost every row to one non-UTF-8 byte."""
    text = "file,lat,lon\ncafé.jpg,55.1,13.1\nplain.jpg,55.2,13.2\nbad.jpg,x,1\nÅre.jpg,63.4,13.1\n"
    (tmp_path / "gps.csv").write_bytes(text.encode("cp1252"))
    _plain_jpeg(tmp_path / "café.jpg")
    with caplog.at_level(logging.WARNING, logger="netvlad_gui.core.photos.geo"):
        points = load_sidecar_csv(tmp_path)
    assert points == {
        "café.jpg": GeoPoint(55.1, 13.1),
        "plain.jpg": GeoPoint(55.2, 13.2),
        "Åre.jpg": GeoPoint(63.4, 13.1),
    }
    assert "line 2, 5 not UTF-8; read as cp1252" in caplog.text
    assert "line 4: unreadable lat/lon" in caplog.text
    assert read_gps(tmp_path / "café.jpg", root=tmp_path).point == GeoPoint(55.1, 13.1)


def test_sidecar_mixed_utf8_and_cp1252_lines_and_utf16(tmp_path) -> None:
    # A UTF-8 file a Windows tool appended to: each line is read in its own encoding.
    data = "file,lat,lon\nMalmö.jpg,55.6,13.0\n".encode() + "Lund é.jpg,55.7,13.2\n".encode(
        "cp1252"
    )
    (tmp_path / "gps.csv").write_bytes(data)
    assert load_sidecar_csv(tmp_path) == {
        "Malmö.jpg": GeoPoint(55.6, 13.0),
        "Lund é.jpg": GeoPoint(55.7, 13.2),
    }
    (tmp_path / "gps.csv").write_bytes("file,lat,lon\r\nÖ.jpg,1,2\r\n".encode("utf-16"))
    assert load_sidecar_csv(tmp_path) == {"Ö.jpg": GeoPoint(1.0, 2.0)}


def test_sidecar_reloaded_when_changed(tmp_path: Path) -> None:
    path = _plain_jpeg(tmp_path / "a.jpg")
    _write_csv(tmp_path, "file,lat,lon\na.jpg,1,2\n")
    assert read_gps(path, root=tmp_path).point == GeoPoint(1.0, 2.0)
    _write_csv(tmp_path, "file,lat,lon\na.jpg,3,4,\n")  # different size: the cache notices
    assert read_gps(path, root=tmp_path).point == GeoPoint(3.0, 4.0)


# --- synthetic EXIF GPS blocks ----------------------------------------------------------------

ASCII, BYTE, RATIONAL = 2, 1, 5


def _entry(tag: int, typ: int, values) -> tuple[int, int, int, bytes]:
    if typ == ASCII:
        data = values.encode() + b"\0"
        return tag, typ, len(data), data
    if typ == BYTE:
        return tag, typ, len(values), bytes(values)
    return tag, typ, len(values), b"".join(struct.pack("<II", n, d) for n, d in values)


def _jpeg_with_gps(path: Path, entries: list[tuple[int, int, int, bytes]]) -> Path:
    """A JPEG whose APP1 holds IFD0 -> GPS IFD with exactly these raw entries."""
    gps_ifd_at = 8 + 2 + 12 + 4
    data_at = gps_ifd_at + 2 + 12 * len(entries) + 4
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x8825, 4, 1, gps_ifd_at) + b"\0" * 4
    table, blob = b"", b""
    for tag, typ, count, data in sorted(entries):
        if len(data) <= 4:
            table += struct.pack("<HHI", tag, typ, count) + data.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, typ, count, data_at + len(blob))
            blob += data + b"\0" * (len(data) % 2)
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd0 + struct.pack("<H", len(entries))
    tiff += table + b"\0" * 4 + blob
    app1 = b"Exif\0\0" + tiff
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])
    return path


def _gps(
    lat_ref="S", lat=((33, 1), (51, 1), (3600, 100)), lon_ref="W", lon=((70, 1), (30, 1), (0, 1))
):
    entries = []
    if lat_ref is not None:
        entries.append(_entry(1, ASCII, lat_ref))
    if lat is not None:
        entries.append(_entry(2, RATIONAL, lat))
    if lon_ref is not None:
        entries.append(_entry(3, ASCII, lon_ref))
    if lon is not None:
        entries.append(_entry(4, RATIONAL, lon))
    return entries


def test_synthetic_exif_south_west_below_sea_level(tmp_path: Path) -> None:
    entries = _gps() + [_entry(5, BYTE, [1]), _entry(6, RATIONAL, [(125, 10)])]
    result = read_exif_gps(_jpeg_with_gps(tmp_path / "sw.jpg", entries))
    assert result.source == "exif", result.reason
    assert result.point.lat == pytest.approx(-(33 + 51 / 60 + 36 / 3600))
    assert result.point.lon == pytest.approx(-70.5)
    assert result.point.alt == pytest.approx(-12.5)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (_gps(lat_ref=None), "no GPSLatitudeRef"),
        (_gps(lon_ref="X"), "GPSLongitudeRef 'X' is not E or W"),
        (_gps(lon=None), "no GPSLongitude"),
        (_gps(lat=((33, 0), (1, 1), (0, 1))), "zero denominator"),
        (_gps(lat=((33, 1), (61, 1), (0, 1))), "impossible parts"),
        (_gps(lon=((181, 1), (0, 1), (0, 1))), "longitude 181 out of range"),
        (_gps(lat=((4294967295, 1),)), "latitude 4294967295 out of range"),
        (_gps("N", ((0, 1), (0, 1), (0, 1)), "E", ((0, 1), (0, 1), (0, 1))), "null island"),
        (_gps(lat=None) + [_entry(2, ASCII, "33.5")], "GPSLatitude has the wrong type"),
        ([_entry(0, BYTE, [2, 3, 0, 0])], "no GPS position in EXIF"),
    ],
)
def test_synthetic_exif_rejections(tmp_path: Path, entries, reason: str) -> None:
    result = read_exif_gps(_jpeg_with_gps(tmp_path / "bad.jpg", entries))
    assert not result.ok and reason in result.reason, result.reason


def test_truncated_exif_never_raises(tmp_path: Path) -> None:
    full = _jpeg_with_gps(tmp_path / "full.jpg", _gps()).read_bytes()
    for cut in range(0, 140, 3):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(full[:cut])
        assert isinstance(read_gps(path), GpsResult)


def _webp_with_gps(path: Path, *, exif_prefix: bool) -> Path:
    """A WebP whose EXIF chunk holds S 33°51'36" W 70°30' (with or without "Exif\\0\\0")."""
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "S", 2: (33.0, 51.0, 36.0), 3: "W", 4: (70.0, 30.0, 0.0)})
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 80, 120)).save(buf, "WEBP", exif=exif)
    data = buf.getvalue()
    at = data.index(b"EXIF")
    size = struct.unpack("<I", data[at + 4 : at + 8])[0]
    payload = data[at + 8 : at + 8 + size]
    assert payload[:2] in (b"II", b"MM")  # Pillow writes the spec's form: TIFF header first
    if exif_prefix:  # what older writers put there, and what exifread expects
        payload = b"Exif\0\0" + payload
        pad = b"\0" * (len(payload) & 1)
        chunk = b"EXIF" + struct.pack("<I", len(payload)) + payload + pad
        data = data[:at] + chunk + data[at + 8 + size + (size & 1) :]
        data = data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("exif_prefix", [False, True])
def test_webp_exif_gps_is_read(tmp_path: Path, exif_prefix: bool) -> None:
    path = _webp_with_gps(tmp_path / "p.webp", exif_prefix=exif_prefix)
    with Image.open(path) as img:  # still a valid WebP
        assert img.size == (16, 16)
    result = read_exif_gps(path)
    assert result.source == "exif", result.reason
    assert result.point.lat == pytest.approx(-(33 + 51 / 60 + 36 / 3600))
    assert result.point.lon == pytest.approx(-70.5)
    plain = tmp_path / "plain.webp"
    Image.new("RGB", (8, 8)).save(plain, "WEBP")
    assert read_exif_gps(plain).reason == "no EXIF data"


def test_exifread_quiet_for_photos_without_exif(tmp_path: Path, caplog) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.webp", "WEBP")
    with caplog.at_level(logging.WARNING):
        for name in ("a.png", "a.webp"):
            assert read_exif_gps(tmp_path / name).reason == "no EXIF data"
    assert not [r for r in caplog.records if r.name.startswith("exifread")], caplog.text


# --- synthetic XMP -----------------------------------------------------------------------------


def _xmp_file(path: Path, body: str, prefix: bytes = b"\xff\xd8") -> Path:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        f'xmlns:exif="http://ns.adobe.com/exif/1.0/" {body}</rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    path.write_bytes(prefix + packet.encode())
    return path


@pytest.mark.parametrize(
    ("body", "lat", "lon"),
    [
        ('exif:GPSLatitude="0,4.21601S" exif:GPSLongitude="34,22.91611E">', -0.0702668, 34.3819352),
        ('exif:GPSLatitude="52,31,8.1N" exif:GPSLongitude="13,24,1.06E">', 52.5189167, 13.4002944),
        ('exif:GPSLatitude="-33.5" exif:GPSLongitude="151.25">', -33.5, 151.25),
        ("exif:GPSLatitude=\"12.5n\" exif:GPSLongitude = '7.25w'>", 12.5, -7.25),
        (
            (
                "><exif:GPSLatitude>45,30.5N</exif:GPSLatitude>"
                "<exif:GPSLongitude>122,34.25W</exif:GPSLongitude>"
            ),
            45.508333,
            -122.570833,
        ),
    ],
)
def test_xmp_forms(tmp_path: Path, body: str, lat: float, lon: float) -> None:
    result = read_gps(_xmp_file(tmp_path / "x.jpg", body))
    assert result.source == "xmp", result.reason
    assert result.point.lat == pytest.approx(lat, abs=1e-6)
    assert result.point.lon == pytest.approx(lon, abs=1e-6)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('exif:GPSLatitude="1,2.5N">', "XMP has no GPSLongitude"),
        ('exif:GPSLatitude="-1.5S" exif:GPSLongitude="2E">', "both a sign and a hemisphere"),
        ('exif:GPSLatitude="1,2.5E" exif:GPSLongitude="2E">', "expected N or S"),
        ('exif:GPSLatitude="1,2.5" exif:GPSLongitude="2E">', "is not a coordinate"),
        ('exif:GPSLatitude="1,75N" exif:GPSLongitude="2E">', "minutes or seconds >= 60"),
        ('exif:GPSLatitude="95N" exif:GPSLongitude="2E">', "out of range"),
        ('exif:GPSLatitude="0,0N" exif:GPSLongitude="0,0E">', "null island"),
        ('exif:GPSAltitude="10/1">', "no GPS in XMP"),
    ],
)
def test_xmp_rejections(tmp_path: Path, body: str, reason: str) -> None:
    result = read_xmp_gps(_xmp_file(tmp_path / "x.jpg", body))
    assert not result.ok and reason in result.reason, result.reason


def test_xmp_only_in_a_packet_within_the_first_mib(tmp_path: Path) -> None:
    body = 'exif:GPSLatitude="10.5" exif:GPSLongitude="20.5">'
    far = _xmp_file(tmp_path / "far.jpg", body, prefix=b"\xff\xd8" + b"\0" * (1 << 20))
    assert read_xmp_gps(far).reason == "no XMP packet"
    loose = tmp_path / "notes.txt"  # the exif README quotes XMP attributes in plain text
    loose.write_text('exif:GPSLatitude="0,4.21601S" exif:GPSLongitude="34,22.91611E"')
    assert read_xmp_gps(loose).reason == "no XMP packet"
    truncated = _xmp_file(tmp_path / "t.jpg", body).read_bytes()[:-40]  # no closing tag
    (tmp_path / "t.jpg").write_bytes(truncated)
    assert read_xmp_gps(tmp_path / "t.jpg").point == GeoPoint(10.5, 20.5)


# --- distances and neighbourhoods ---------------------------------------------------------------


def test_haversine_known_values_and_broadcasting() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180)
    assert isinstance(haversine_m(10.0, 20.0, 10.0, 20.0), float)
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_M)
    assert haversine_m(0, 179.9999, 0, -179.9999) == pytest.approx(22.24, abs=0.01)
    d = haversine_m(np.zeros((3, 1)), np.zeros((3, 1)), np.arange(4.0), np.zeros(4))
    assert d.shape == (3, 4) and np.allclose(d[0], np.arange(4) * EARTH_RADIUS_M * math.pi / 180)


def _brute(lats, lons, lat, lon, radius):
    d = haversine_m(lat, lon, lats, lons)
    idx = np.flatnonzero(d <= radius)
    return idx[np.lexsort((idx, d[idx]))], d


@pytest.mark.parametrize(("clat", "clon"), [(55.7, 13.2), (0.0, 179.9995), (89.9999, 0.0)])
def test_neighbours_match_brute_force(clat: float, clon: float) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    lats = np.clip(clat + rng.normal(0, 2e-4, n), -90, 90)
    lons = (clon + rng.normal(0, 2e-4, n) + 180) % 360 - 180
    lats[:5], lons[:5] = lats[5], lons[5]  # exact duplicates
    tree = GeoNeighbours(lats, lons)
    assert len(tree) == n
    for radius in (0.0, 10.0, 25.0, 60.0):
        qlats, qlons = np.clip(lats[:40] + 1e-5, -90, 90), lons[:40]
        many = tree.query_many(qlats, qlons, radius)
        for q, (qlat, qlon) in enumerate(zip(qlats, qlons, strict=True)):
            idx, dist = tree.within(qlat, qlon, radius)
            want, d = _brute(lats, lons, qlat, qlon, radius)
            np.testing.assert_array_equal(idx, want)
            np.testing.assert_array_equal(many[q], want)
            np.testing.assert_allclose(dist, d[want])
            assert np.all(np.diff(dist) >= 0)
    idx, dist = tree.within(lats[5], lons[5], 0.0)
    assert set(range(6)) <= set(idx.tolist()) and np.all(dist == 0)


def test_neighbours_whole_earth_and_edges() -> None:
    tree = GeoNeighbours([0, 0, 45, -89], [0, 180, 90, -45])
    idx, dist = tree.within(0, 0, 1e9)
    assert sorted(idx.tolist()) == [0, 1, 2, 3] and dist[0] == 0
    assert tree.query_many([], [], 10) == []
    empty = GeoNeighbours([], [])
    assert len(empty) == 0 and empty.within(1, 2, 100)[0].size == 0
    assert [a.size for a in empty.query_many([1, 2], [3, 4], 5)] == [0, 0]
    assert tree.within(0, 0, 10)[0].dtype.kind == "i"


@pytest.mark.parametrize(
    "call",
    [
        lambda: GeoNeighbours([0, 91], [0, 0]),
        lambda: GeoNeighbours([0, 1], [0]),
        lambda: GeoNeighbours([[0, 1]], [[0, 1]]),
        lambda: GeoNeighbours([0, np.nan], [0, 0]),
        lambda: GeoNeighbours([0], [0]).within(0, 0, -1),
        lambda: GeoNeighbours([0], [0]).within(0, 200, 1),
        lambda: GeoNeighbours([0], [0]).query_many([0], [0], float("nan")),
        lambda: GeoNeighbours([0], [0]).query_many([], [], -5),
    ],
)
def test_neighbours_bad_input(call) -> None:
    with pytest.raises(GeoError):
        call()


# --- gps.csv that is no list of photos (issue 23) ----------------------------------------------


def _loads_within(root: Path, seconds: float = 10.0):
    """load_sidecar_csv in a daemon thread: a FIFO once blocked it (and a build) forever."""
    import threading

    out: list = []
    t = threading.Thread(target=lambda: out.append(load_sidecar_csv(root)), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"load_sidecar_csv({root}) still running after {seconds} s"
    return out[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_named_gps_csv_is_refused_at_once(tmp_path: Path, caplog) -> None:
    os.mkfifo(tmp_path / "gps.csv")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    with caplog.at_level(logging.WARNING, logger="netvlad_gui.core.photos.geo"):
        points = _loads_within(tmp_path)
    assert points == {} and "not a regular file (a named pipe)" in caplog.text
    reason = read_gps(tmp_path / "a.jpg", root=tmp_path).reason
    assert "gps.csv ignored (not a regular file (a named pipe))" in reason


def test_gps_csv_linked_to_a_device_or_too_large_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "gps.csv").symlink_to("/dev/zero")  # once read until memory ran out
    assert _loads_within(tmp_path).problem == "not a regular file (a device)"
    (tmp_path / "gps.csv").unlink()
    with open(tmp_path / "gps.csv", "wb") as f:
        f.truncate(geo.SIDECAR_MAX_BYTES + 1)  # sparse: costs no disk
    points = load_sidecar_csv(tmp_path)
    assert points == {} and "MiB, more than 256 MiB" in points.problem


def test_a_row_refused_for_its_values_says_why_not_just_not_listed(tmp_path: Path) -> None:
    for name in ("far.jpg", "text.jpg", "null.jpg", "fixed.jpg", "x.jpg"):
        (tmp_path / name).write_bytes(b"no exif")
    _write_csv(
        tmp_path,
        "file,lat,lon\nfar.jpg,95,13\ntext.jpg,55.7 N,13.2\nnull.jpg,0,0\n"
        "fixed.jpg,95,13\nfixed.jpg,55.7,13.2\n",
    )
    sidecar = load_sidecar_csv(tmp_path)

    def reason(name: str) -> str:
        return read_gps(tmp_path / name, root=tmp_path, sidecar=sidecar).reason

    assert "'far.jpg' in gps.csv was refused (line 2: latitude 95 out of range)" in reason(
        "far.jpg"
    )
    assert "line 3: unreadable lat/lon ('55.7 N', '13.2')" in reason("text.jpg")
    assert "null island" in reason("null.jpg") and "not listed" not in reason("null.jpg")
    assert read_gps(tmp_path / "fixed.jpg", root=tmp_path, sidecar=sidecar).ok  # later row wins
    assert "'x.jpg' not listed in gps.csv" in reason("x.jpg")
