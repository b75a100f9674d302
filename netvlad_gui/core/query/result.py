"""What locating one photo gives: the result and its matches, and the CLI's JSON of them.

Kept apart from locate.py (which runs the network) so that the fronts, the export and the map
can handle results without importing torch: the GUI's window opens before the engine loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Match:
    rank: int
    path: str
    lat: float | None
    lon: float | None
    score: float
    distance_m: float | None  # from the predicted location
    id: int = -1
    agrees: bool = False  # part of the winning consensus
    score_rank: int = 0  # rank by global score alone (differs from ``rank`` after verification)
    inliers: int | None = None  # geometric inliers with the query; None: not verified
    # The inlier correspondences, (N, 2) float32 query and reference pixels of the original
    # (EXIF-oriented) photos, for drawing; None when not verified.
    query_xy: np.ndarray | None = field(default=None, repr=False)
    ref_xy: np.ndarray | None = field(default=None, repr=False)


@dataclass
class LocateResult:
    query: str
    lat: float | None = None
    lon: float | None = None
    confidence: float = 0.0
    radius_m: float | None = None
    error_m: float | None = None  # to the query's own GPS, when it has one
    true_lat: float | None = None
    true_lon: float | None = None
    matches: list[Match] = field(default_factory=list)
    error: str = ""  # why this photo could not be located
    verdict: str | None = None  # "located", "uncertain", "not_found"; None when ``error``
    verdict_reason: str = ""  # why the verdict, in words for a user (core/query/verdict.py)
    verified: bool = False  # geometric verification ran (matches carry ``inliers``)

    def to_json(self, *, evidence: bool = False) -> dict:
        """The CLI's --json contract; ``evidence`` adds issue 11's ``verdict`` and per-match
        ``inliers`` (null when not verified), and issue 21's ``verdict_reason``."""
        keys = ("path", "lat", "lon", "score", "distance_m") + (("inliers",) if evidence else ())
        out = {
            "query": self.query,
            "lat": self.lat,
            "lon": self.lon,
            "confidence": self.confidence,
            "radius_m": self.radius_m,
            "error_m": self.error_m,
            "matches": [{k: getattr(m, k) for k in keys} for m in self.matches],
        }
        if evidence:
            out["verdict"] = self.verdict
            out["verdict_reason"] = self.verdict_reason
        if self.error:
            out["error"] = self.error
        return out
