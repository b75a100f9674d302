"""Where a photo was taken (EXIF, XMP or a sidecar gps.csv) and which photos lie near each other.

The readers never raise: a library holds broken files and one of them must not stop indexing.
A value that cannot be a real position is refused with a reason instead of guessed at, because a
wrong geotag silently poisons training (positives/negatives by distance) and evaluation.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import stat
import struct
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import exifread

from .distance import (  # noqa: F401 - geo's distance helpers, where callers look for them
    EARTH_RADIUS_M,
    GeoNeighbours,
    format_distance,
    haversine_m,
)

log = logging.getLogger(__name__)

SIDECAR_NAME = "gps.csv"
XMP_SCAN_BYTES = 1 << 20  # XMP sits in the header; never read a whole 50 MB raw file for it
_ALT_RANGE_M = (-12_000.0, 100_000.0)  # deepest mine to high balloon; beyond that is garbage
WEBP_EXIF_MAX_BYTES = 1 << 24  # an EXIF chunk larger than this is not read

# exifread logs a warning for every file without EXIF (each PNG and WebP of a library); a missing
# EXIF block is normal here and read_exif_gps says so in its reason. An app that configured the
# logger itself keeps its setting.
_exifread_log = logging.getLogger("exifread")
if _exifread_log.level == logging.NOTSET:
    _exifread_log.setLevel(logging.ERROR)


class _Bad(Exception):
    """Internal: a tag holds something that is not a usable position (message = the reason)."""


@dataclass(frozen=True)
class GeoPoint:
    lat: float
    lon: float
    alt: float | None = None


@dataclass(frozen=True)
class GpsResult:
    point: GeoPoint | None
    source: str  # "exif", "xmp", "csv" or "" when none
    reason: str = ""  # why there is no usable GPS; "" when point is set

    @property
    def ok(self) -> bool:
        return self.point is not None

    def describe(self) -> str:
        if self.point is None:
            return f"no usable GPS: {self.reason}"
        return f"{self.point.lat:.6f}, {self.point.lon:.6f} ({self.source})"


def _none(reason: str) -> GpsResult:
    return GpsResult(None, "", reason)


def _check_point(lat: float, lon: float) -> str:
    """The reason a decoded position is impossible or bogus, or "" when it is plausible."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return f"non-finite position {lat}, {lon}"
    if abs(lat) > 90:
        return f"latitude {lat:.10g} out of range"
    if abs(lon) > 180:
        return f"longitude {lon:.10g} out of range"
    if lat == 0 and lon == 0:
        return 'position 0, 0 ("null island") is a bogus fix'
    return ""


def _clean_alt(alt: float | None) -> float | None:
    """Altitude is a bonus: a garbage value is dropped, it never costs the photo its position."""
    if alt is None or not math.isfinite(alt) or not _ALT_RANGE_M[0] <= alt <= _ALT_RANGE_M[1]:
        return None
    return alt


# --- EXIF ---------------------------------------------------------------------------------


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | Fraction):
        raise _Bad(f"{what} has the wrong type ({type(value).__name__})")
    if getattr(value, "denominator", 1) == 0:  # exifread keeps x/0 as a Ratio that can't divide
        raise _Bad(f"{what} has a zero denominator")
    return float(value)


def _exif_axis(tags: dict, name: str, hemis: str, limit: float) -> float:
    """Signed degrees from GPS<name> (deg, min, sec rationals) and GPS<name>Ref.

    A missing or unknown hemisphere reference is refused rather than assumed to be N/E: a
    guessed sign moves the photo to another continent, which is worse than no position.
    """
    tag = tags.get(f"GPS GPS{name}")
    if tag is None:
        raise _Bad(f"no GPS{name}")
    values = tag.values
    if not isinstance(values, list):
        kind = getattr(tag.field_type, "name", tag.field_type)
        raise _Bad(f"GPS{name} has the wrong type ({kind} {str(values)[:20]!r})")
    if not 1 <= len(values) <= 3:
        raise _Bad(f"GPS{name} has {len(values)} values, expected 3")
    parts = [_number(v, f"GPS{name}") for v in values]
    if any(not math.isfinite(p) or p < 0 for p in parts) or any(p >= 60 for p in parts[1:]):
        raise _Bad(f"GPS{name} has impossible parts {parts}")
    deg = sum(p / 60**i for i, p in enumerate(parts))
    if deg > limit:
        raise _Bad(f"{name.lower()} {deg:.10g} out of range")
    ref_tag = tags.get(f"GPS GPS{name}Ref")
    if ref_tag is None:
        raise _Bad(f"no GPS{name}Ref (hemisphere unknown)")
    ref = ref_tag.values.strip().upper()[:1] if isinstance(ref_tag.values, str) else None
    if not ref or ref not in hemis:
        raise _Bad(f"GPS{name}Ref {str(ref_tag.values)[:10]!r} is not {' or '.join(hemis)}")
    return -deg if ref in "SW" else deg


def _exif_altitude(tags: dict) -> float | None:
    """GPSAltitude in metres; GPSAltitudeRef 1 means below sea level (missing ref = above)."""
    tag = tags.get("GPS GPSAltitude")
    if tag is None or not isinstance(tag.values, list) or not tag.values:
        return None
    try:
        alt = _number(tag.values[0], "GPSAltitude")
    except _Bad as exc:
        log.debug("altitude ignored: %s", exc)
        return None
    ref = tags.get("GPS GPSAltitudeRef")
    ref_values = ref.values if ref is not None else None
    if isinstance(ref_values, list) and ref_values and ref_values[0] == 1:
        alt = -alt
    return _clean_alt(alt)


def _webp_exif(fh) -> bytes | None:
    """The TIFF block of a WebP's EXIF chunk (b"" when it has none); None when not a WebP.

    exifread skips six bytes of that chunk for an "Exif\\0\\0" prefix, which spec-compliant
    writers (libwebp, Pillow) do not write, so their GPS was never found; older writers do
    write it, and both forms are read here.
    """
    head = fh.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    while len(chunk := fh.read(8)) == 8:
        fourcc, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if fourcc == b"EXIF":
            data = fh.read(min(size, WEBP_EXIF_MAX_BYTES))
            return data[6:] if data.startswith(b"Exif\0\0") else data
        fh.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even size
    return b""


def read_exif_gps(path: str | Path) -> GpsResult:
    """GPS from the EXIF block (any format exifread knows: JPEG/MPO, TIFF, HEIC, PNG, WebP)."""
    try:
        with open(path, "rb") as fh:
            try:
                source = fh
                if (webp := _webp_exif(fh)) is not None:
                    if not webp:
                        return _none("no EXIF data")
                    source = io.BytesIO(webp)
                tags = exifread.process_file(source, details=False, extract_thumbnail=False)
            except Exception as exc:  # the parser fails in many ways on broken files
                log.debug("exifread failed on %s", path, exc_info=True)
                return _none(f"EXIF unreadable ({type(exc).__name__}: {str(exc)[:80]})")
    except (OSError, ValueError) as exc:
        return _none(f"cannot read file ({getattr(exc, 'strerror', None) or exc})")
    if not tags:
        return _none("no EXIF data")
    if "GPS GPSLatitude" not in tags and "GPS GPSLongitude" not in tags:
        return _none("no GPS position in EXIF")
    coords, problems = [], []
    for name, hemis, limit in (("Latitude", "NS", 90.0), ("Longitude", "EW", 180.0)):
        try:
            coords.append(_exif_axis(tags, name, hemis, limit))
        except _Bad as exc:
            problems.append(str(exc))
    if problems:
        return _none("; ".join(problems))
    if problem := _check_point(*coords):
        return _none(problem)
    return GpsResult(GeoPoint(coords[0], coords[1], _exif_altitude(tags)), "exif")


# --- XMP ----------------------------------------------------------------------------------

_XMP_PACKET = re.compile(rb"<x:x[am]pmeta\b.*?(?:</x:x[am]pmeta>|\Z)", re.DOTALL)
_NUM = r"\d+(?:\.\d*)?|\.\d+"
_XMP_DMS = re.compile(rf"({_NUM})\s*,\s*({_NUM})(?:\s*,\s*({_NUM}))?\s*([NSEW])", re.IGNORECASE)
_XMP_DECIMAL = re.compile(rf"([+-]?)({_NUM})\s*([NSEW]?)", re.IGNORECASE)
_XMP_RATIONAL = re.compile(r"([+-]?\d+)(?:\s*/\s*(\d+))?")


def _xmp_value(packet: str, name: str) -> str | None:
    """exif:<name> as an attribute (exif:GPSLatitude="...") or element (<exif:GPSLatitude>)."""
    m = re.search(rf"\bexif:{name}\b\s*=\s*([\"'])(.*?)\1", packet, re.DOTALL) or re.search(
        rf"<exif:{name}\b[^>]*>([^<]*)</exif:{name}>", packet
    )
    return m.group(m.lastindex).strip() if m else None


def _xmp_axis(text: str, hemis: str, limit: float) -> float:
    """Adobe "deg,min.fracR", "deg,min,secR" or plain (signed) decimal degrees."""
    if m := _XMP_DMS.fullmatch(text):
        deg, mins, secs = float(m[1]), float(m[2]), float(m[3] or 0)
        if mins >= 60 or secs >= 60:
            raise _Bad(f"{text!r} has minutes or seconds >= 60")
        value, ref, sign = deg + mins / 60 + secs / 3600, m[4].upper(), ""
    elif m := _XMP_DECIMAL.fullmatch(text):
        sign, value, ref = m[1], float(m[2]), m[3].upper()
        if sign == "-" and ref:
            raise _Bad(f"{text!r} has both a sign and a hemisphere")
    else:
        raise _Bad(f"{text[:40]!r} is not a coordinate")
    if ref and ref not in hemis:
        raise _Bad(f"{text!r} has hemisphere {ref}, expected {' or '.join(hemis)}")
    if value > limit:
        raise _Bad(f"{text!r} out of range")
    return -value if sign == "-" or ref in ("S", "W") else value


def _xmp_altitude(packet: str) -> float | None:
    m = _XMP_RATIONAL.fullmatch(_xmp_value(packet, "GPSAltitude") or "")
    if not m or (m[2] is not None and int(m[2]) == 0):
        return None
    alt = int(m[1]) / int(m[2] or 1)
    return _clean_alt(-alt if _xmp_value(packet, "GPSAltitudeRef") == "1" else alt)


def read_xmp_gps(path: str | Path) -> GpsResult:
    """exif:GPSLatitude/GPSLongitude from an XMP packet in the first MiB of the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(XMP_SCAN_BYTES)
    except (OSError, ValueError) as exc:
        return _none(f"cannot read file ({getattr(exc, 'strerror', None) or exc})")
    packets = [m.group().decode("utf-8", "replace") for m in _XMP_PACKET.finditer(head)]
    if not packets:
        return _none("no XMP packet")
    for packet in packets:
        lat_text, lon_text = _xmp_value(packet, "GPSLatitude"), _xmp_value(packet, "GPSLongitude")
        if lat_text is None and lon_text is None:
            continue
        if lat_text is None or lon_text is None:
            return _none(f"XMP has no {'GPSLatitude' if lat_text is None else 'GPSLongitude'}")
        try:
            lat, lon = _xmp_axis(lat_text, "NS", 90.0), _xmp_axis(lon_text, "EW", 180.0)
        except _Bad as exc:
            return _none(f"XMP {exc}")
        if problem := _check_point(lat, lon):
            return _none(problem)
        return GpsResult(GeoPoint(lat, lon, _xmp_altitude(packet)), "xmp")
    return _none("no GPS in XMP")


# --- sidecar gps.csv ----------------------------------------------------------------------


def _key(relpath: str) -> str:
    """One spelling per file: POSIX separators, no "./", NFC (macOS stores names as NFD)."""
    text = unicodedata.normalize("NFC", relpath.strip().replace("\\", "/"))
    return PurePosixPath(text).as_posix() if text else ""


def _decode_sidecar(data: bytes, path: Path) -> str:
    """gps.csv as text: UTF-8 (with or without BOM), else cp1252 line by line, never failing.

    A spreadsheet saved on Windows writes cp1252, and a tool appending to a UTF-8 file may too:
    each line that is not UTF-8 is read as cp1252 (latin-1 for its 5 unassigned bytes), so a
    stray byte costs at most its own row's name, never the whole file. A UTF-16 BOM (Excel's
    "Unicode text") is honoured.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines, legacy = [], []
    for n, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            legacy.append(n)
            try:
                lines.append(raw.decode("cp1252"))
            except UnicodeDecodeError:
                lines.append(raw.decode("latin-1"))
    shown = ", ".join(map(str, legacy[:5])) + (" …" if len(legacy) > 5 else "")
    log.warning("%s: line %s not UTF-8; read as cp1252 (Windows)", path, shown)
    return "".join(lines)


#: A gps.csv larger than this is refused (about 6 million rows): past it, something other than
#: a list of photos sits under that name (a log, a dump, a link to a device).
SIDECAR_MAX_BYTES = 256 << 20


class Sidecar(dict[str, GeoPoint]):
    """gps.csv as read: positions by file key, plus why rows (or the whole file) were refused.

    ``refused`` maps a file key to why its row was refused, so that a photo's GPS reason says
    what was wrong with its row instead of "not listed"; ``problem`` says why the whole file
    was ignored ("" when it was read).
    """

    def __init__(self, points=(), *, refused=None, problem: str = ""):
        super().__init__(points)
        self.refused: dict[str, str] = dict(refused or {})
        self.problem = problem


def _read_sidecar_bytes(path: Path) -> bytes:
    """The bytes of gps.csv, refusing what is not a regular file of a sane size.

    A FIFO named gps.csv would block the build forever and a link to /dev/zero would read until
    memory runs out: the file is opened without blocking and checked before it is read, and no
    more than ``SIDECAR_MAX_BYTES`` are ever read. Raises OSError (missing, unreadable) or
    ``_Bad`` (the reason, for a user).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Bad(f"not a regular file ({_file_type(st.st_mode)})")
        if st.st_size > SIDECAR_MAX_BYTES:
            raise _Bad(f"{st.st_size / 2**20:.0f} MiB, more than {SIDECAR_MAX_BYTES >> 20} MiB")
        data = fh.read(SIDECAR_MAX_BYTES + 1)
    if len(data) > SIDECAR_MAX_BYTES:  # grew while it was read
        raise _Bad(f"more than {SIDECAR_MAX_BYTES >> 20} MiB")
    return data


def _file_type(mode: int) -> str:
    for test, words in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return words
    return "not a plain file"


def load_sidecar_csv(root: str | Path) -> Sidecar:
    """<root>/gps.csv (file, lat, lon[, alt_m]) keyed by POSIX path relative to root.

    A missing file gives {}; a bad row is skipped with a warning naming its line and why, and
    kept in ``refused`` so that its photo's GPS reason says why. A gps.csv that is not a regular
    file, or too large, is ignored with a warning (``problem``).
    """
    path = Path(root) / SIDECAR_NAME
    points = Sidecar()
    try:
        text = _decode_sidecar(_read_sidecar_bytes(path), path)
    except FileNotFoundError:
        return points
    except _Bad as exc:
        log.warning("%s ignored: %s", path, exc)
        points.problem = str(exc)
        return points
    except OSError as exc:
        log.warning("%s unreadable (%s); sidecar ignored", path, exc.strerror or exc)
        points.problem = f"unreadable: {exc.strerror or exc}"
        return points

    def refuse(key: str, line: int, why: str) -> None:
        log.warning("%s line %d: %s; row skipped", path, line, why)
        if key not in points:
            points.refused[key] = f"line {line}: {why}"

    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if missing := [c for c in ("file", "lat", "lon") if c not in fields]:
            log.warning("%s: no column %s; sidecar ignored", path, ", ".join(missing))
            points.problem = f"no column {', '.join(missing)}"
            return points
        for row in reader:
            line = reader.line_num
            key = _key(row.get(fields["file"]) or "")
            if not key:
                log.warning("%s line %d: no file name; row skipped", path, line)
                continue
            lat_text, lon_text = row[fields["lat"]], row[fields["lon"]]
            try:
                lat, lon = float(lat_text), float(lon_text)
            except (TypeError, ValueError):
                shown = ", ".join(repr((t or "").strip()[:20]) for t in (lat_text, lon_text))
                refuse(key, line, f"unreadable lat/lon ({shown})")
                continue
            if problem := _check_point(lat, lon):
                refuse(key, line, problem)
                continue
            alt = None
            if "alt_m" in fields and (alt_text := (row[fields["alt_m"]] or "").strip()):
                try:
                    alt = _clean_alt(float(alt_text))
                except ValueError:
                    log.warning("%s line %d: altitude %r ignored", path, line, alt_text)
            if key in points:
                log.warning("%s line %d: %r listed again; the later row wins", path, line, key)
            points[key] = GeoPoint(lat, lon, alt)
            points.refused.pop(key, None)
    except csv.Error as exc:
        log.warning("%s unreadable (%s); %d rows kept", path, exc, len(points))
    return points


class LazySidecar(Mapping[str, GeoPoint]):
    """<root>/gps.csv, parsed on first use: a scan that finds nothing new never reads it.

    A 1 000 000-row gps.csv takes ~6 s to parse; a no-op ``netvlad index`` used to pay that
    every time. Photos whose own EXIF/XMP holds their position never need it either.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._points: Sidecar | None = None

    def points(self) -> Sidecar:
        if self._points is None:
            self._points = load_sidecar_csv(self.root)
        return self._points

    def __getitem__(self, key: str) -> GeoPoint:
        return self.points()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.points())

    def __len__(self) -> int:
        return len(self.points())

    @property
    def loaded(self) -> bool:
        return self._points is not None

    @property
    def refused(self) -> dict[str, str]:
        return self.points().refused

    @property
    def problem(self) -> str:
        return self.points().problem


_sidecar_cache: dict[str, tuple[tuple[int, int], Sidecar]] = {}


def _cached_sidecar(root: Path) -> Sidecar:
    """Parse gps.csv once per library, again only when the file changes."""
    try:
        st = (root / SIDECAR_NAME).stat()
    except OSError:
        return Sidecar()
    stamp, cache_key = (st.st_mtime_ns, st.st_size), str(root.resolve())
    cached = _sidecar_cache.get(cache_key)
    if cached is None or cached[0] != stamp:
        cached = _sidecar_cache[cache_key] = (stamp, load_sidecar_csv(root))
    return cached[1]


def _relative_key(path: Path, root: Path | None) -> str | None:
    if root is None:
        return _key(path.as_posix())
    for p, r in ((path.absolute(), root.absolute()), (path.resolve(), root.resolve())):
        try:
            return _key(p.relative_to(r).as_posix())
        except ValueError:
            continue
    return None


def read_gps(
    path: str | Path,
    root: str | Path | None = None,
    sidecar: Mapping[str, GeoPoint] | None = None,
) -> GpsResult:
    """EXIF, then XMP, then the sidecar (given, or <root>/gps.csv); never raises.

    Without root, a given sidecar is looked up by ``path`` as written (POSIX).
    """
    path = Path(path)
    root = Path(root) if root is not None else None
    try:
        if not path.is_file():
            return _none("not a file" if path.exists() else "file not found")
    except (OSError, ValueError) as exc:
        return _none(f"cannot read file ({exc})")
    notes = []
    for source, reader in (("exif", read_exif_gps), ("xmp", read_xmp_gps)):
        result = reader(path)
        if result.ok:
            return result
        notes.append(f"{source}: {result.reason}")
    if sidecar is None and root is not None:
        sidecar = _cached_sidecar(root)
    if sidecar is not None:
        key = _relative_key(path, root)
        if key is None:
            notes.append(f"csv: {os.fspath(path)!r} is not under the library root")
        elif (point := sidecar.get(key)) is not None:
            return GpsResult(point, "csv")
        elif why := getattr(sidecar, "refused", {}).get(key):
            notes.append(f"csv: the row of {key!r} in {SIDECAR_NAME} was refused ({why})")
        elif problem := getattr(sidecar, "problem", ""):
            notes.append(f"csv: {SIDECAR_NAME} ignored ({problem})")
        else:
            notes.append(f"csv: {key!r} not listed in {SIDECAR_NAME}")
    return _none("; ".join(notes))
