"""Distances on the Earth: between two points, every point within R metres of another (a k-d
tree on the unit sphere, for training's positives and negatives and a sequence's neighbours),
and a distance as people read it."""

from __future__ import annotations

import math
from itertools import chain

import numpy as np
from numpy.typing import ArrayLike

from ..errors import GeoError

EARTH_RADIUS_M = 6_371_008.8  # mean radius; the sphere is within 0.5% of WGS-84 distances


def haversine_m(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Great-circle distance in metres (broadcasts; a float for scalar input)."""
    p1, p2 = np.radians(np.asarray(lat1, float)), np.radians(np.asarray(lat2, float))
    dl = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if np.ndim(d) == 0 else d


def _coords(lats: ArrayLike, lons: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lats, lons = np.atleast_1d(np.asarray(lats, float)), np.atleast_1d(np.asarray(lons, float))
    if lats.ndim != 1 or lats.shape != lons.shape:
        raise GeoError(f"lats {lats.shape} and lons {lons.shape} must be equal-length 1-D arrays")
    bad = ~(np.isfinite(lats) & np.isfinite(lons) & (np.abs(lats) <= 90) & (np.abs(lons) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise GeoError(f"point {i} ({lats[i]}, {lons[i]}) is not a valid latitude/longitude")
    return lats, lons


def _unit_xyz(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lats), np.radians(lons)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def _chord(radius_m: float) -> float:
    """Radius on the ground -> straight-line radius on the unit sphere, with a little slack."""
    if not math.isfinite(radius_m) or radius_m < 0:
        raise GeoError(f"radius {radius_m} m must be a finite number >= 0")
    return 2 * math.sin(min(radius_m / EARTH_RADIUS_M, math.pi) / 2) * (1 + 1e-9) + 1e-12


class GeoNeighbours:
    """All reference points within R metres of a query: a k-d tree on the unit sphere.

    Built once over N points, queried many times. The tree prunes by chord length; the exact
    haversine distance then decides membership and order (ties by index).
    """

    def __init__(self, lats: ArrayLike, lons: ArrayLike):
        self._lats, self._lons = _coords(lats, lons)
        from scipy.spatial import cKDTree  # 0.3 s to import: only when a tree is made

        self._tree = cKDTree(_unit_xyz(self._lats, self._lons).reshape(-1, 3))

    def __len__(self) -> int:
        return len(self._lats)

    def _exact(self, lat: float, lon: float, cand: list[int], radius_m: float):
        idx = np.asarray(cand, dtype=np.intp)
        dist = np.asarray(haversine_m(lat, lon, self._lats[idx], self._lons[idx]), dtype=float)
        keep = dist <= radius_m
        idx, dist = idx[keep], dist[keep]
        order = np.lexsort((idx, dist))
        return idx[order], dist[order]

    def within(self, lat: float, lon: float, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(indices sorted by distance, distances in metres) of points within radius_m."""
        qlat, qlon = _coords(lat, lon)
        cand = self._tree.query_ball_point(_unit_xyz(qlat, qlon)[0], _chord(radius_m))
        return self._exact(qlat[0], qlon[0], cand, radius_m)

    def query_many(self, lats: ArrayLike, lons: ArrayLike, radius_m: float) -> list[np.ndarray]:
        """Per query point, the indices within radius_m sorted by distance.

        Training uses it twice: positives within 10 m, and (as the complement) negatives
        beyond 25 m.
        """
        qlat, qlon = _coords(lats, lons)
        chord = _chord(radius_m)
        if qlat.size == 0:
            return []
        cands = self._tree.query_ball_point(_unit_xyz(qlat, qlon), chord)
        counts = np.fromiter(map(len, cands), dtype=np.intp, count=len(cands))
        idx = np.fromiter(chain.from_iterable(cands), dtype=np.intp, count=int(counts.sum()))
        query = np.repeat(np.arange(len(cands)), counts)  # one pass over all pairs, no loop
        dist = np.asarray(haversine_m(qlat[query], qlon[query], self._lats[idx], self._lons[idx]))
        keep = dist <= radius_m
        idx, dist, query = idx[keep], dist[keep], query[keep]
        order = np.lexsort((idx, dist, query))
        bounds = np.cumsum(np.bincount(query, minlength=len(cands)))[:-1]
        return np.split(idx[order], bounds)


def format_distance(metres: float, decimals: int = 1) -> str:
    """A distance as people read it: metres below 1 km ("12.3 m"), kilometres past ("353.9 km")."""
    if round(abs(metres), decimals) < 1000:
        return f"{metres:.{decimals}f} m"
    return f"{metres / 1000:.1f} km"
