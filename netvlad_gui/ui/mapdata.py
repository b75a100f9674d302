"""Turning core results into what the map page and the clipboard take (no Qt, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netvlad_gui.core.photos import geo
from netvlad_gui.core.query import wording
from netvlad_gui.core.query.result import LocateResult

OSM_ZOOM = 18
#: The photos on either side of the one on show that its map view reaches (of its walk's track).
TRACK_FIT_NEIGHBOURS = 5


def result_to_map(res: LocateResult) -> dict[str, Any]:
    """The ``MapView.show_result`` dict of a located photo (labels are file names).

    A photo not found in this library gets no confidence circle (``radius_m`` None) and no
    confidence: its marker is the nearest guess (``guess``), and its label says so; so does a
    first guess whose evidence is still being checked.
    """
    kind = wording.coordinates_kind(res)
    guess = kind in (wording.GUESS, wording.FIRST_GUESS)
    label = Path(res.query).name
    if kind == wording.GUESS:
        label += " (a guess: not found in this library)"
    elif kind == wording.FIRST_GUESS:
        waiting = wording.WAITING_FOR_NEIGHBOURS  # checked already: its neighbours decide
        label += (
            f" (its own answer: {waiting})" if res.verified else " (first guess: being checked)"
        )
    query = {
        "label": label,
        "guess": guess,
        "first_guess": kind == wording.FIRST_GUESS,
        "lat": res.lat,
        "lon": res.lon,
        "radius_m": None if guess else res.radius_m,
        "confidence": res.confidence if res.lat is not None and not guess else None,
        "verdict": res.verdict,
        "true_lat": res.true_lat,
        "true_lon": res.true_lon,
        "error_m": None if kind == wording.FIRST_GUESS else res.error_m,
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


def track_to_map(photos: list[tuple[int, str, LocateResult]], current: int) -> dict[str, Any]:
    """The ``MapView.show_track`` dict of a walk's photos decided together: (token, label,
    final result) each, drawn in walk order (``sequence.index``) and numbered by it; the
    photo ``current`` is on show, and the view reaches its nearest neighbours."""
    placed = [  # a place only where it is an answer: never a not-found photo's guess
        (token, label, res)
        for token, label, res in photos
        if res.sequence is not None and wording.coordinates_kind(res) == wording.ANSWER
    ]
    placed.sort(key=lambda p: p[2].sequence.index)
    here = next((res.sequence.index for token, _, res in placed if token == current), None)
    points = [
        {
            "token": token,
            "number": res.sequence.index + 1,
            "lat": res.lat,
            "lon": res.lon,
            "label": label,
            "support": wording.support(res),
            "current": token == current,
            "fit": here is not None and abs(res.sequence.index - here) <= TRACK_FIT_NEIGHBOURS,
        }
        for token, label, res in placed
    ]
    return {"points": points}


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
