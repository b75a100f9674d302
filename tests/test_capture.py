"""Capture times from EXIF, photos ordered by them (else by file name), groups split into trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from netvlad_gui.core.config import SequenceConfig
from netvlad_gui.core.errors import ConfigError
from netvlad_gui.core.photos.capture import (
    BY_FILE,
    BY_TIME,
    CaptureTime,
    natural_key,
    order_photos,
    parse_capture_time,
    read_capture_time,
)
from netvlad_gui.core.photos.geo import GeoPoint

EXIF_IFD = 0x8769
DATETIME_ORIGINAL, SUBSEC_ORIGINAL, OFFSET_ORIGINAL = 0x9003, 0x9291, 0x9011


def write_photo(
    path: Path, when: str | None = None, subsec: str | None = None, offset: str | None = None
) -> Path:
    """A small JPEG with the capture-time tags given (Pillow's own EXIF writer)."""
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    if when is not None:
        ifd[DATETIME_ORIGINAL] = when
    if subsec is not None:
        ifd[SUBSEC_ORIGINAL] = subsec
    if offset is not None:
        ifd[OFFSET_ORIGINAL] = offset
    Image.new("RGB", (32, 24), (120, 80, 40)).save(path, exif=exif)
    return path


def test_read_time_with_sub_seconds_and_zone(tmp_path):
    t = read_capture_time(write_photo(tmp_path / "a.jpg", "2024:05:01 12:00:03", "25", "+02:00"))
    assert t.ok and t.has_offset
    assert t.clock_seconds == pytest.approx(1714564803.25)
    assert t.seconds == pytest.approx(1714564803.25 - 7200)  # UTC
    assert t.text == "2024:05:01 12:00:03.25+02:00"


def test_read_time_without_sub_seconds_or_zone(tmp_path):
    t = read_capture_time(write_photo(tmp_path / "a.jpg", "2024:05:01 12:00:03"))
    assert t.ok and not t.has_offset
    assert t.seconds == t.clock_seconds == pytest.approx(1714564803.0)


@pytest.mark.parametrize(
    ("original", "subsec", "reason"),
    [
        (None, None, "no DateTimeOriginal"),
        ("2024:13:01 12:00:00", None, "not a real date"),
        ("    :  :     :  :  ", None, "not a date and time"),  # cameras without a clock set
    ],
)
def test_unusable_times_give_a_reason(original, subsec, reason):
    t = parse_capture_time(original, subsec)
    assert not t.ok and reason in t.reason


def test_sub_seconds_keep_their_digits():
    assert parse_capture_time("2024:05:01 12:00:00", "025").seconds % 1 == pytest.approx(
        0.025, abs=1e-6
    )
    assert parse_capture_time("2024:05:01 12:00:00", "x1").seconds % 1 == 0  # junk ignored


def test_photos_without_exif_or_unreadable(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00garbage")
    for path in (plain, junk, tmp_path / "missing.jpg"):
        t = read_capture_time(path)
        assert not t.ok and t.reason


def test_order_by_capture_time_uses_sub_seconds(tmp_path):
    # A burst within one second: only the sub-seconds tell the order, not the file names.
    names = [
        write_photo(tmp_path / "c.jpg", "2024:05:01 12:00:03", "10"),
        write_photo(tmp_path / "a.jpg", "2024:05:01 12:00:03", "90"),
        write_photo(tmp_path / "b.jpg", "2024:05:01 12:00:03", "50"),
    ]
    times = [read_capture_time(p) for p in names]
    o = order_photos([str(p) for p in names], times)
    assert o.by == BY_TIME and o.note == ""
    assert [names[i].name for i in o.order] == ["c.jpg", "b.jpg", "a.jpg"]
    assert o.groups == [o.order]


def test_order_by_time_across_zones(tmp_path):
    # 12:30 in Paris (+02:00) is before 12:00 in London (+01:00) is false: 10:30 vs 11:00 UTC.
    paris = parse_capture_time("2024:05:01 12:30:00", None, "+02:00")
    london = parse_capture_time("2024:05:01 12:00:00", None, "+01:00")
    o = order_photos(["london.jpg", "paris.jpg"], [london, paris])
    assert [["london.jpg", "paris.jpg"][i] for i in o.order] == ["paris.jpg", "london.jpg"]


def test_mixed_zones_compare_camera_clocks():
    zoned = parse_capture_time("2024:05:01 12:00:10", None, "+02:00")
    plain = parse_capture_time("2024:05:01 12:00:00")
    o = order_photos(["b.jpg", "a.jpg"], [zoned, plain])
    assert o.by == BY_TIME and "time zone" in o.note
    assert o.order == [1, 0]  # clocks: 12:00:00 before 12:00:10


def test_file_order_when_a_time_is_missing(tmp_path):
    names = ["IMG_10.jpg", "IMG_9.jpg", "IMG_2.jpg"]
    times = [parse_capture_time("2024:05:01 12:00:00"), CaptureTime(None, reason="x"), None]
    o = order_photos(names, times)
    assert o.by == BY_FILE and o.note == "2 of 3 photos have no capture time"
    assert [names[i] for i in o.order] == ["IMG_2.jpg", "IMG_9.jpg", "IMG_10.jpg"]
    assert "file order" in o.describe()


def test_file_order_without_times_says_so():
    o = order_photos(["b.jpg", "a.jpg"])
    assert o.by == BY_FILE and o.note == "no photo has a capture time" and o.order == [1, 0]


def test_natural_key():
    names = ["frame10.jpg", "Frame9.jpg", "frame1.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["a.jpg", "frame1.jpg", "Frame9.jpg", "frame10.jpg"]


def test_split_at_a_time_gap():
    cfg = SequenceConfig(max_gap_s=300.0)
    times = [0.0, 2.0, 4.0, 1000.0, 1003.0]
    o = order_photos([f"p{i}.jpg" for i in range(5)], times, cfg=cfg)
    assert o.groups == [[0, 1, 2], [3, 4]]
    assert o.splits == ["17 min between p2.jpg and p3.jpg (more than 5 min)"]


def test_split_where_the_speed_is_impossible():
    # 2 s apart but 10 km apart by the photos' own GPS: two trips (or a wrong geotag).
    near, far = GeoPoint(55.7047, 13.1910), GeoPoint(55.7947, 13.1910)
    o = order_photos(["a.jpg", "b.jpg", "c.jpg"], [0.0, 2.0, 4.0], [near, near, far])
    assert o.groups == [[0, 1], [2]]
    assert "too far for one trip" in o.splits[0] and "10.0 km in 2 s" in o.splits[0]


def test_no_split_for_a_plausible_trip_or_gps_noise():
    a, b = GeoPoint(55.7047, 13.1910), GeoPoint(55.7052, 13.1910)  # 56 m in 1 s: GPS noise
    o = order_photos(["a.jpg", "b.jpg", "c.jpg"], [0.0, 1.0, 60.0], [a, b, None])
    assert o.groups == [[0, 1, 2]] and o.splits == []


def test_untimed_photos_split_only_beyond_any_trip():
    a, b = GeoPoint(55.70, 13.19), GeoPoint(59.33, 18.07)  # Lund, Stockholm
    o = order_photos(["1.jpg", "2.jpg", "3.jpg"], None, [a, a, b])
    assert o.by == BY_FILE and o.groups == [[0, 1], [2]]


def test_empty_and_single():
    assert order_photos([]).groups == []
    assert order_photos(["a.jpg"]).groups == [[0]]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_gap_s", 0, "sequence gap"),
        ("window", 1, "sequence window"),
        ("restart", 1.0, "sequence restart"),
        ("min_step_m", 50.0, "sequence min step"),
        ("every_s", -1, "video interval"),
        ("candidates", 0, "sequence candidates"),
    ],
)
def test_config_names_the_setting(field, value, words):
    with pytest.raises(ConfigError, match=words):
        SequenceConfig(**{field: value}).validate()
