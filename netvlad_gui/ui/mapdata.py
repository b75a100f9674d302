"""Turning core results into what the map page and the clipboard take (no Qt, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netvlad_gui.core.photos import geo
from netvlad_gui.core.query.result import LocateResult
from netvlad_gui.core.query.verdict import NOT_FOUND

OSM_ZOOM = 18


def result_to_map(res: LocateResult) -> dict[str, Any]:
    """The ``MapView.show_result`` dict of a located photo (labels are file names).

    A photo not found in this library gets no confidence circle (``radius_m`` None) and no
    confidence: its marker is the nearest guess, and its label says so.
    """
    guess = res.verdict == NOT_FOUND
    label = Path(res.query).name
    query = {
        "label": f"{label} (a guess: not found in this library)" if guess else label,
        "lat": res.lat,
        "lon": res.lon,
        "radius_m": None if guess else res.radius_m,
        "confidence": res.confidence if res.lat is not None and not guess else None,
        "verdict": res.verdict,
        "true_lat": res.true_lat,
        "true_lon": res.true_lon,
        "error_m": res.error_m,
    }
    matches = [
        {
            "rank": m.rank,
            "id": m.id,
            "lat": m.lat,
            "lon": m.lon,
            "label": Path(m.path).name,
            "score": m.score,
            "distance_m": m.distance_m,
            "thumb_url": Path(m.path).as_uri() if Path(m.path).is_absolute() else "",
        }
        for m in res.matches
    ]
    return {"query": query, "matches": matches}


def format_coords(lat: float, lon: float) -> str:
    """``"55.698256, 13.195201"``: what map sites and spreadsheets accept as a pasted position."""
    return f"{lat:.6f}, {lon:.6f}"


def osm_url(lat: float, lon: float, zoom: int = OSM_ZOOM) -> str:
    """OpenStreetMap at the position, with a marker."""
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}"
        f"#map={zoom}/{lat:.6f}/{lon:.6f}"
    )


def format_distance(m: float | None) -> str:
    """The CLI's rule (core.geo.format_distance), whole metres, "?" when unknown."""
    return "?" if m is None else geo.format_distance(m, 0)
