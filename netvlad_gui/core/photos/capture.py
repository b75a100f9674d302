"""When a photo was taken, and a group of photos in the order they were taken, split into trips.

Capture time is EXIF ``DateTimeOriginal`` with ``SubSecTimeOriginal`` (a burst shoots several
photos a second) and ``OffsetTimeOriginal`` (the time zone, written by phones since EXIF 2.31).
A camera's clock without a zone is read as it is: comparing two such times is right for one
camera, which is what a sequence is. Photos are ordered by capture time only when every one of
them has one; otherwise by file name (numbers in names compare as numbers), and the ordering
says so. A group is split where one trip is impossible: too long between two photos
(``SequenceConfig.max_gap_s``), or their own GPS farther apart than ``max_speed_mps`` allows.

The reader never raises: a photo without a usable time is a photo in file order, not an error.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import exifread

from ..config import SequenceConfig
from . import geo

log = logging.getLogger(__name__)

BY_TIME = "capture time"
BY_FILE = "file order"

#: Two phone GPS fixes can each be tens of metres off: never split on less than this.
GPS_SLACK_M = 100.0

_DATETIME = re.compile(r"\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})\s*")
_OFFSET = re.compile(r"\s*([+-])(\d{2}):(\d{2})\s*")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CaptureTime:
    """A photo's capture time, or why it has none.

    ``seconds`` is a POSIX time: UTC when the photo states its zone (``has_offset``), else
    the camera's clock read as if it were UTC (``clock_seconds`` is always the latter).
    """

    seconds: float | None
    clock_seconds: float | None = None
    has_offset: bool = False
    text: str = ""  # as the photo states it, e.g. "2024:05:01 12:00:00.25+02:00"
    reason: str = ""  # why there is no time; "" when there is one

    @property
    def ok(self) -> bool:
        return self.seconds is not None


def _none(reason: str) -> CaptureTime:
    return CaptureTime(None, reason=reason)


def _tag_text(tags: dict, name: str) -> str | None:
    tag = tags.get(name)
    if tag is None:
        return None
    values = tag.values
    if isinstance(values, bytes):
        values = values.decode("ascii", "replace")
    if not isinstance(values, str):
        return None
    return values.strip("\x00 ") or None


def parse_capture_time(
    original: str | None, subsec: str | None = None, offset: str | None = None
) -> CaptureTime:
    """A capture time from the three EXIF strings ("YYYY:MM:DD HH:MM:SS", "25", "+02:00")."""
    if not original:
        return _none("no DateTimeOriginal in EXIF")
    m = _DATETIME.fullmatch(original)
    if not m:
        return _none(f"DateTimeOriginal {original[:24]!r} is not a date and time")
    try:
        clock = datetime(*map(int, m.groups()), tzinfo=UTC)
    except ValueError:
        return _none(f"DateTimeOriginal {original[:24]!r} is not a real date")
    text = original.strip()
    fraction = 0.0
    digits = (subsec or "").strip()
    if digits:
        if digits.isdigit():
            fraction = int(digits) / 10 ** len(digits)  # "25" is 0.25 s, "025" is 0.025 s
            text += f".{digits}"
        else:
            log.debug("SubSecTimeOriginal %r ignored", digits)
    clock_s = clock.timestamp() + fraction
    seconds, has_offset = clock_s, False
    if offset and (o := _OFFSET.fullmatch(offset)):
        sign = -1 if o[1] == "-" else 1
        delta = timedelta(hours=int(o[2]), minutes=int(o[3]))
        if delta <= timedelta(hours=14) and int(o[3]) < 60:
            seconds, has_offset = clock_s - sign * delta.total_seconds(), True
            text += offset.strip()
    return CaptureTime(seconds, clock_s, has_offset, text)


def read_capture_time(path: str | Path) -> CaptureTime:
    """The capture time in a photo's EXIF (any format exifread reads); never raises."""
    try:
        with open(path, "rb") as fh:
            try:
                tags = exifread.process_file(fh, details=False, extract_thumbnail=False)
            except Exception as exc:  # noqa: BLE001 - the parser fails in many ways on broken files
                return _none(f"EXIF unreadable ({type(exc).__name__}: {str(exc)[:80]})")
    except (OSError, ValueError) as exc:
        return _none(f"cannot read file ({getattr(exc, 'strerror', None) or exc})")
    if not tags:
        return _none("no EXIF data")
    return parse_capture_time(
        _tag_text(tags, "EXIF DateTimeOriginal"),
        _tag_text(tags, "EXIF SubSecTimeOriginal"),
        _tag_text(tags, "EXIF OffsetTimeOriginal"),
    )


def natural_key(name: str) -> tuple:
    """File-name order as people expect it: "IMG_9" before "IMG_10"."""
    parts = _DIGITS.split(name.casefold())
    return tuple((1, int(p), p) if p.isdigit() else (0, 0, p) for p in parts)


@dataclass
class Ordering:
    """A group of photos in the order they were taken, and the trips it splits into.

    ``order[k]`` is the input position of the k-th photo; ``groups`` are runs of positions in
    ``order`` (each a list of input positions); ``splits`` says why each cut was made.
    """

    order: list[int]
    by: str  # BY_TIME or BY_FILE
    note: str = ""  # why file order, when it is
    groups: list[list[int]] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)  # seconds, per input position

    def describe(self) -> str:
        head = f"{len(self.order)} photos by {self.by}"
        if self.note:
            head += f" ({self.note})"
        if len(self.groups) > 1:
            head += f", {len(self.groups)} groups"
        return head


def _format_gap(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def order_photos(
    names: Sequence[str],
    times: Sequence[CaptureTime | float | None] | None = None,
    gps: Sequence[geo.GeoPoint | None] | None = None,
    cfg: SequenceConfig | None = None,
) -> Ordering:
    """Order photos by capture time (else file name) and split them where one trip is impossible.

    ``times`` are capture times (CaptureTime, or seconds such as a video frame's); ``gps`` the
    photos' own positions where they have one (None). Both are per input position.
    """
    cfg = (cfg or SequenceConfig()).validate()
    n = len(names)
    times = list(times) if times is not None else [None] * n
    gps = list(gps) if gps is not None else [None] * n
    if len(times) != n or len(gps) != n:
        raise ValueError("names, times and gps must be as long as each other")
    caps = [t if isinstance(t, CaptureTime) else None for t in times]
    secs: list[float | None] = []
    timed = [c for c in caps if c is not None and c.ok]
    # Some photos with a zone and some without (two cameras, one set to another zone):
    # compare what the clocks said, which is right for photos of one camera.
    mixed = any(c.has_offset for c in timed) and not all(c.has_offset for c in timed)
    for t, c in zip(times, caps, strict=True):
        if c is not None:
            secs.append(c.clock_seconds if mixed else c.seconds)
        elif t is None or not math.isfinite(float(t)):
            secs.append(None)
        else:
            secs.append(float(t))
    missing = sum(s is None for s in secs)
    names_key = [natural_key(Path(str(m)).name) + natural_key(str(m)) for m in names]
    if n and not missing:
        order = sorted(range(n), key=lambda i: (secs[i], names_key[i]))
        by, note = BY_TIME, ""
        if mixed:
            note = "some photos state no time zone: camera clocks compared as they are"
    else:
        order = sorted(range(n), key=lambda i: names_key[i])
        by = BY_FILE
        note = (
            "no photo has a capture time"
            if missing == n
            else f"{missing} of {n} photos have no capture time"
        )
        if n == 0:
            note = ""
    out = Ordering(order, by, note, times=secs)
    if not order:
        return out
    group = [order[0]]
    for prev, cur in itertools.pairwise(order):
        why = _split_reason(names, secs, gps, prev, cur, cfg, timed=by == BY_TIME)
        if why:
            out.groups.append(group)
            out.splits.append(why)
            group = []
        group.append(cur)
    out.groups.append(group)
    return out


def _split_reason(
    names: Sequence[str],
    secs: Sequence[float | None],
    gps: Sequence[geo.GeoPoint | None],
    a: int,
    b: int,
    cfg: SequenceConfig,
    *,
    timed: bool,
) -> str:
    """Why photos a and b (consecutive) cannot be one trip, or ""."""
    pair = f"{Path(str(names[a])).name} and {Path(str(names[b])).name}"
    gap = None
    if timed:
        gap = abs(secs[b] - secs[a])
        if gap > cfg.max_gap_s:
            return f"{_format_gap(gap)} between {pair} (more than {_format_gap(cfg.max_gap_s)})"
    pa, pb = gps[a], gps[b]
    if pa is None or pb is None:
        return ""
    dist = float(geo.haversine_m(pa.lat, pa.lon, pb.lat, pb.lon))
    # Without times, the farthest one trip goes between two photos is a full gap at top speed.
    limit = cfg.max_speed_mps * (gap if gap is not None else cfg.max_gap_s) + GPS_SLACK_M
    if dist > limit:
        speed = "" if gap is None else f" in {_format_gap(gap)}"
        return f"{geo.format_distance(dist)}{speed} between {pair}: too far for one trip"
    return ""


def capture_times(paths: Sequence[str | Path]) -> list[CaptureTime]:
    """:func:`read_capture_time` of each path."""
    return [read_capture_time(p) for p in paths]
