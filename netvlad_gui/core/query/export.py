"""Writing a session's results to CSV and GeoJSON, for spreadsheets and GIS tools.

Pure functions over ``LocateResult``: the GUI's File → Export and any script can call them. Files
are written to a temporary name and renamed, so an interrupted export never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import FileWriteError, NetvladError
from ..paths import atomic_write_text
from .result import LocateResult
from .wording import ANSWER, NO_PLACE, coordinates_kind

CSV_FIELDS = (
    "query",
    "lat",  # the answer; empty when the photo was not found (see guess_lat)
    "lon",
    "verdict",  # located / uncertain / not_found (empty when the photo could not be read)
    "confidence",
    "radius_m",
    "guess_lat",  # not found: the nearest match's position, which is no location of the photo
    "guess_lon",
    "true_lat",
    "true_lon",
    "error_m",
    "top1_path",
    "top1_score",
    "top1_distance_m",
    "matches",
    "error",
    "top1_inliers",  # geometric inliers of the best match (empty when not verified)
    "verdict_reason",  # why the verdict, in words (core/query/verdict.py)
)


class ExportError(NetvladError, OSError):
    """The export file could not be written; the message names the file and the reason."""


def _num(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _text(name: str | None) -> str | None:
    """A file name fit for a UTF-8 file: a name that is not UTF-8 on disk (kept by Python as
    surrogate escapes) shows replacement characters instead of making the export fail."""
    if name is None:
        return None
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_guess(res: LocateResult) -> bool:
    """Whether the result's coordinates are no answer: the nearest match of a photo not found
    here, or a first guess whose check did not finish (core/query/wording.py decides)."""
    return coordinates_kind(res) not in (ANSWER, NO_PLACE)


def result_row(res: LocateResult) -> dict[str, Any]:
    """One CSV row: the prediction, the ground truth when known, the best match, the verdict.

    A photo not found carries no coordinates in ``lat``/``lon`` (a map or a geotagger would
    place it there): the nearest match's position, a guess, goes to ``guess_lat``/``guess_lon``.
    """
    top = res.matches[0] if res.matches else None
    guess = _is_guess(res)
    return {
        "query": _text(res.query),
        "lat": None if guess else _num(res.lat, 7),
        "lon": None if guess else _num(res.lon, 7),
        "verdict": res.verdict,
        "confidence": _num(res.confidence, 4) if res.lat is not None else None,
        "radius_m": None if guess else _num(res.radius_m, 1),
        "guess_lat": _num(res.lat, 7) if guess else None,
        "guess_lon": _num(res.lon, 7) if guess else None,
        "true_lat": _num(res.true_lat, 7),
        "true_lon": _num(res.true_lon, 7),
        "error_m": _num(res.error_m, 1),
        "top1_path": _text(top.path) if top else None,
        "top1_score": _num(top.score, 4) if top else None,
        "top1_distance_m": _num(top.distance_m, 1) if top else None,
        "matches": len(res.matches),
        "error": res.error or None,
        "top1_inliers": top.inliers if top else None,
        "verdict_reason": res.verdict_reason or None,
    }


def to_csv(results: Iterable[LocateResult]) -> str:
    """CSV text with a header row; empty cells where a value is unknown."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for res in results:
        writer.writerow({k: ("" if v is None else v) for k, v in result_row(res).items()})
    return out.getvalue()


def _match_json(m) -> dict[str, Any]:
    return {
        "rank": m.rank,
        "path": _text(m.path),
        "lat": _num(m.lat, 7),
        "lon": _num(m.lon, 7),
        "score": _num(m.score, 4),
        "distance_m": _num(m.distance_m, 1),
        "agrees": bool(m.agrees),
        "inliers": m.inliers,
    }


def to_geojson(results: Iterable[LocateResult]) -> dict[str, Any]:
    """A FeatureCollection: one Point per photo at its predicted location ([lon, lat] order).

    A photo that could not be located, or was not found here, keeps its feature with a null
    geometry, so the file still lists every photo of the session and why; a not-found photo's
    nearest match is in its properties (``guess_lat``/``guess_lon``), never its geometry.
    """
    features = []
    for res in results:
        geometry = None
        if res.lat is not None and res.lon is not None and not _is_guess(res):
            geometry = {"type": "Point", "coordinates": [_num(res.lon, 7), _num(res.lat, 7)]}
        props = {k: v for k, v in result_row(res).items() if k not in ("lat", "lon", "matches")}
        props["matches"] = [_match_json(m) for m in res.matches]
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def _atomic_write_text(path: Path, text: str) -> Path:
    try:
        return atomic_write_text(path, text)
    except FileWriteError as exc:
        raise ExportError(str(exc)) from None


def write_csv(results: Iterable[LocateResult], path: str | os.PathLike) -> Path:
    """Write ``results`` as CSV (UTF-8); returns the path."""
    return _atomic_write_text(Path(path), to_csv(results))


def write_geojson(results: Iterable[LocateResult], path: str | os.PathLike) -> Path:
    """Write ``results`` as a GeoJSON FeatureCollection (UTF-8); returns the path."""
    text = json.dumps(to_geojson(results), ensure_ascii=False, indent=1, allow_nan=False)
    return _atomic_write_text(Path(path), text + "\n")


def write_results(results: Iterable[LocateResult], path: str | os.PathLike) -> Path:
    """CSV or GeoJSON, chosen by the file's suffix (.csv, .geojson or .json)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return write_csv(results, path)
    if suffix in (".geojson", ".json"):
        return write_geojson(results, path)
    raise ExportError(f"cannot export to {Path(path).name}: use a .csv or .geojson file name")
