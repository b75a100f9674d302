"""The verdict on a photo: ``located``, ``uncertain`` or ``not_found`` (not in this library).

A nearest neighbour always exists, so a predicted point alone is no answer. The verdict says
whether the library holds evidence for it:

- verified (core/query/verify.py ran): geometric inliers are the evidence. Enough inliers on a place
  that the other verified candidates do not contradict: ``located``. Fewer than
  ``min_inliers`` on every candidate: ``not_found``, whatever the global score says (photos of
  Berlin and Portland score like true matches of a Lund library with some models, but share no
  geometry with it). Texture-poor scenes (tiny corridor frames) get ``not_found`` too: no
  evidence is no evidence.
- not verified: the calibrated global confidence of ``locate.predict`` alone.

Both fronts show this verdict; neither decides it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import LocateConfig, VerifyConfig
from .consensus import vote

if TYPE_CHECKING:  # a type name only: the verdict needs no faiss
    from ..library.index import SearchHit

LOCATED = "located"
UNCERTAIN = "uncertain"
NOT_FOUND = "not_found"
#: No match has GPS (a library without any, e.g. video frames): there is no place to find, only
#: similar photos to show; never "not in this library".
SIMILAR_ONLY = "similar_only"
VERDICTS = (LOCATED, UNCERTAIN, NOT_FOUND, SIMILAR_ONLY)

#: Calibrated global confidence at or above which an unverified photo counts as located, and
#: below which it counts as not in the library (locate.predict's confidence; Berlin and Portland
#: photos against the lund library score 0.00-0.14, lund queries 0.87-1.00).
LOCATED_CONFIDENCE = 0.5
NOT_FOUND_CONFIDENCE = 0.2

# What each verdict is called in front of a user, in one place for both fronts: a headline
# (result panel, plain CLI output) and a short form (a row in a list of photos).
_HEADLINES = {
    LOCATED: "Located",
    UNCERTAIN: "Uncertain",
    NOT_FOUND: "Not found in this library",
    SIMILAR_ONLY: "Similar photos only",
}
_SHORT = {
    LOCATED: "Located",
    UNCERTAIN: "Uncertain",
    NOT_FOUND: "Not in library",
    SIMILAR_ONLY: "Similar photos",
}


def describe(verdict: str | None, *, short: bool = False) -> str:
    """The user-facing words for ``verdict`` ("" for None, i.e. a photo that could not be read).

    ``short`` is for narrow places (a row in the photo list): "Not in library".
    """
    if verdict is None:
        return ""
    words = _SHORT if short else _HEADLINES
    if verdict not in words:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    return words[verdict]


def inlier_evidence(inliers: int, cfg: VerifyConfig) -> float:
    """How much ``inliers`` say "same place", in [0, 1]: a logistic from min to located inliers.

    0.12 at ``min_inliers``, 0.5 half-way, 0.88 at ``located_inliers``, ~1 beyond.
    """
    lo, hi = cfg.min_inliers, cfg.located_inliers
    mid, width = (lo + hi) / 2.0, max(hi - lo, 1) / 4.0
    return float(1.0 / (1.0 + math.exp(-(inliers - mid) / width)))


@dataclass
class VerifiedPrediction:
    lat: float
    lon: float
    confidence: float
    radius_m: float
    members: list[int]  # positions in the (verified) hit list that agree
    inliers: int  # the most inliers among the members


def predict_verified(
    hits: Sequence[SearchHit],
    inliers: Sequence[int | None],
    cfg: LocateConfig | None = None,
) -> VerifiedPrediction | None:
    """Inlier-weighted consensus of the verified candidates with GPS; None without evidence.

    Candidates with at least ``min_inliers`` vote with weight ``inliers - min_inliers/2``; the
    place with most support wins (ties to the most inliers). Confidence is the inlier evidence of
    its best member times the share of all votes it holds.
    """
    cfg = cfg or LocateConfig()
    vcfg = cfg.verify
    cand = [
        i
        for i, (h, n) in enumerate(zip(hits, inliers, strict=False))
        if n is not None and n >= vcfg.min_inliers and h.image.has_gps
    ]
    if not cand:
        return None
    n = np.array([inliers[i] for i in cand], dtype=float)
    w = n - vcfg.min_inliers / 2.0
    lat = np.array([hits[i].image.lat for i in cand])
    lon = np.array([hits[i].image.lon for i in cand])
    c = vote(lat, lon, w, cfg.agree_radius_m, tiebreak=n)  # ties to the most inliers
    top = int(n[c.members].max())
    confidence = float(np.clip(inlier_evidence(top, vcfg) * c.agreement, 0.0, 1.0))
    radius = c.radius_m(confidence, cfg.agree_radius_m)
    members = [cand[i] for i in c.members]
    return VerifiedPrediction(c.lat, c.lon, confidence, radius, members, top)


def decide(
    *,
    has_location: bool,
    confidence: float,
    inliers: int | None,
    cfg: VerifyConfig | None = None,
) -> str:
    """The verdict from the figures a result carries.

    ``inliers`` is the most inliers on the predicted place (None: verification did not run or
    could read no candidate); ``confidence`` the result's.
    """
    cfg = cfg or VerifyConfig()
    if not has_location:
        return NOT_FOUND
    if inliers is None:
        if confidence >= LOCATED_CONFIDENCE:
            return LOCATED
        return NOT_FOUND if confidence < NOT_FOUND_CONFIDENCE else UNCERTAIN
    if inliers >= cfg.located_inliers and confidence >= LOCATED_CONFIDENCE:
        return LOCATED
    if inliers < cfg.min_inliers:
        return NOT_FOUND
    return UNCERTAIN
