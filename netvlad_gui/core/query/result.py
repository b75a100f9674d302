"""What locating one photo gives: the result and its matches, and the CLI's JSON of them.

Kept apart from locate.py (which runs the network) so that the fronts, the export and the map
can handle results without importing torch: the GUI's window opens before the engine loads.

A photo's answer comes in stages (core/query/session.py): the global search first, then the
geometric check. Each stage is a whole ``LocateResult``; one that is not ``final`` carries no
verdict, and the fronts show it as provisional.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .verdict import NOT_FOUND

#: The stages of a photo's answer, in the order a session yields them.
GLOBAL, VERIFIED, SEQUENCE = "global", "verified", "sequence"
STAGES = (GLOBAL, VERIFIED, SEQUENCE)


@dataclass(frozen=True)
class SequenceInfo:
    """How a photo located with its neighbours was decided (core/query/together.py)."""

    id: int  # the group (one trip) within this run, from 1
    index: int  # the photo's position in its group, in capture (or file) order, from 0
    support: int  # neighbours on its stretch of track whose own candidates agree with it
    neighbours: int = 0  # photos on its unbroken stretch of track, itself excluded
    changed: bool = False  # the track moved the photo from its own answer

    def to_json(self) -> dict:
        return {"id": self.id, "index": self.index, "support": self.support}


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
    # In the order that decided the answer: after verification, match #1 is the one whose
    # inliers the verdict rests on.
    matches: list[Match] = field(default_factory=list)
    error: str = ""  # why this photo could not be located
    verdict: str | None = None  # "located", "uncertain", "not_found"; None: error or not final
    verdict_reason: str = ""  # why, in a user's words ("" when the verdict says it all)
    verified: bool = False  # geometric verification ran (matches carry ``inliers``)
    stage: str = VERIFIED  # which evidence this result rests on (STAGES)
    final: bool = True  # False: a later stage follows; no verdict yet, show it as provisional
    best_inliers: int | None = None  # match #1's inliers when verified, else None
    sequence: SequenceInfo | None = None  # decided with its neighbours; None: located alone

    @property
    def guess(self) -> bool:
        """The coordinates are only the nearest reference's, not an answer (not in library)."""
        return self.lat is not None and self.verdict == NOT_FOUND

    @property
    def provisional(self) -> bool:
        """A stage shown while the evidence is still being gathered (no verdict, no actions)."""
        return not self.final and not self.error

    def to_json(self, *, evidence: bool = False) -> dict:
        """The CLI's --json contract; ``evidence`` adds issue 11's ``verdict`` and per-match
        ``inliers`` (null when not verified), and ``verdict_reason``."""
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
            out["verdict_reason"] = self.verdict_reason or None
            out["sequence"] = self.sequence.to_json() if self.sequence is not None else None
        if self.error:
            out["error"] = self.error
        return out
