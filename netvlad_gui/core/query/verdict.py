"""The verdict on a photo: ``located``, ``uncertain`` or ``not_found``, and why, in plain words.

A nearest neighbour always exists, so a predicted point alone is no answer. The verdict says
whether the library holds evidence for it, from one small record of what locating gathered
(:class:`Evidence`), with the thresholds of ``LocateConfig.verdict`` and ``LocateConfig.verify``:

- **Geometric support** (core/query/verify.py ran): enough inliers on a place that the other
  verified candidates do not contradict: ``located``. Some inliers: ``uncertain``.
- **No geometric support** (fewer than ``min_inliers`` everywhere): that alone does not say
  "not here". A night photo of a library's street shares almost no local detail with its day
  photos (gardens_point: 93 % of the right matches were called "not in this library"), a
  texture-poor corridor neither. So the calibrated global similarity of match #1 decides:
  where it looks like this library's own same-place pairs (``look_alike`` or more),
  ``uncertain``, saying the photos look alike but share no detail. Where it looks unlike the
  library too, ``not_found`` (Berlin and Portland against the Lund library). At night neither
  the global score nor the local features tell a place in the library from another city
  (gardens_point, night -> day_left: 12 % of the photos whose day place was match #1 got "not
  in this library" with 12-19 patch inliers and a similarity of 0-0.13, as many as night
  photos of the same walk against the Lund library reach). With
  ``VerifyConfig.night_inliers`` set, a dark or colourless photo with detail in it
  (``light_change``: a night shot) and at least that many inliers is ``uncertain`` instead,
  saying why; off by default, since it calls some night photos of another city uncertain too.
- **Not verified**: the calibrated global confidence of ``locate.predict`` alone.
- **No calibration** (a library without photos more than 25 m apart, or without GPS pairs):
  there is no telling how alike "alike" is, so the global score never makes a photo
  ``located`` or ``not_found`` on its own; geometry still can make it ``located``.

Both fronts show this verdict and its reason; neither decides it. No torch, no faiss: the
fronts import this module before the engine loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..config import LocateConfig, VerdictConfig, VerifyConfig
from ..photos.light import Light
from .consensus import vote

if TYPE_CHECKING:  # only names a type: importing the index would load faiss
    from ..library.index import SearchHit

LOCATED = "located"
UNCERTAIN = "uncertain"
NOT_FOUND = "not_found"
#: No match has GPS (a library without any, e.g. video frames): there is no place to find, only
#: similar photos to show; never "not in this library".
SIMILAR_ONLY = "similar_only"
VERDICTS = (LOCATED, UNCERTAIN, NOT_FOUND, SIMILAR_ONLY)

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


def calibrated_similarity(score: float, calibration: dict[str, float] | None) -> float | None:
    """How much ``score`` looks like a same-place match *of this library*, in [0, 1]; None
    without calibration.

    0 is the typical best different-place score of the library's own reference pairs
    (``neg_best_median``, builder._calibrate), 1 its typical best same-place score. A library
    without same-place pairs (photos all more than 25 m apart) scales from 0 to half-way to a
    perfect score instead; one without different-place pairs (photos all within 25 m of each
    other) or without GPS has no calibration: the raw cosine means nothing across models and
    libraries. ``locate.predict`` uses the same number as its "distinctiveness".
    """
    cal = calibration or {}
    lo = cal.get("neg_best_median")
    hi = cal.get("pos_best_median", cal.get("pos_median"))
    if lo is None:
        return None
    if hi is not None and hi > lo + 1e-3:
        value = (score - lo) / (hi - lo)
    else:
        value = (score - lo) / max(1.0 - lo, 1e-3) * 2.0
    return float(np.clip(value, 0.0, 1.0))


@dataclass(frozen=True)
class Evidence:
    """What a photo's verdict is decided from: what locating it gathered.

    ``confidence`` is the result's (the verified consensus once verification ran, else the
    calibrated global one); ``similarity`` is :func:`calibrated_similarity` of match #1's global
    score (None: the library has no calibration); ``best_inliers`` the most inliers on the
    predicted place (None: not verified, or no candidate could be read).
    """

    has_location: bool
    confidence: float
    similarity: float | None
    best_inliers: int | None
    #: How the photo's light differs from daylight colour (:func:`light_change`): "dark",
    #: "colourless", or None (ordinary light, or not measured).
    light: str | None = None


class Decision(NamedTuple):
    verdict: str
    reason: str  # why, in words for a user; never empty


# Reasons, in one place: both fronts and the JSON show them as they are.
NO_GPS = "none of the matches has a GPS position"
LOOK_ALIKE_NO_POINTS = (
    "no matching points: the photos look alike but share no detail "
    "(e.g. night and day, or another season)"
)
UNLIKE_NO_POINTS = "no matching points, and it looks like no photo of this library"
NIGHT_NO_POINTS = (
    "only {points}, but the photo is {light} (e.g. taken at night): photos of one place by "
    "night and by day share too little to tell whether it is in this library"
)

NO_CALIBRATION_NO_POINTS = (
    "no matching points, and this library cannot tell how alike its own photos of one place "
    "look (it needs photos more than 25 m apart)"
)
NO_CALIBRATION = (
    "not verified, and this library cannot tell how alike its own photos of one place look "
    "(it needs photos more than 25 m apart)"
)


def light_change(light: Light | None, cfg: VerdictConfig | None = None) -> str | None:
    """The change of light ("dark", "colourless") where ``light`` (photos/light.py) is unlike
    daylight colour and the photo still shows detail; None otherwise (a blank image)."""
    if light is None:
        return None
    vd = cfg or VerdictConfig()
    if light.detail < vd.night_detail:
        return None
    if light.brightness < vd.night_brightness:
        return "dark"
    if light.colour < vd.night_colour:
        return "colourless"
    return None


def _points(n: int) -> str:
    return f"{n} matching point{'s' if n != 1 else ''}"


def decide(evidence: Evidence, cfg: LocateConfig | None = None) -> Decision:
    """The verdict and its reason (see the module's docstring for the rule)."""
    cfg = cfg or LocateConfig()
    vc, vd = cfg.verify, cfg.verdict
    e = evidence
    if not e.has_location:
        return Decision(NOT_FOUND, NO_GPS)
    n = e.best_inliers
    if n is not None:  # verified
        if n >= vc.located_inliers and e.confidence >= vd.located_confidence:
            return Decision(LOCATED, f"{_points(n)} with the best match")
        if n >= vc.located_inliers:
            return Decision(UNCERTAIN, f"{_points(n)}, but the matches point to different places")
        if n >= vc.min_inliers:
            return Decision(UNCERTAIN, f"only {_points(n)} with the best match")
        if e.similarity is None:
            return Decision(UNCERTAIN, NO_CALIBRATION_NO_POINTS)
        if e.similarity >= vd.look_alike:
            return Decision(UNCERTAIN, LOOK_ALIKE_NO_POINTS)
        if e.light is not None and vc.night_inliers is not None and n >= vc.night_inliers:
            return Decision(UNCERTAIN, NIGHT_NO_POINTS.format(light=e.light, points=_points(n)))
        return Decision(NOT_FOUND, UNLIKE_NO_POINTS)
    if e.similarity is None:
        return Decision(UNCERTAIN, NO_CALIBRATION)
    if e.confidence >= vd.located_confidence:
        return Decision(LOCATED, "not verified: the best matches look alike and agree")
    if e.confidence < vd.not_found_confidence:
        return Decision(NOT_FOUND, "not verified: it looks like no photo of this library")
    return Decision(UNCERTAIN, "not verified, and the likeness is not conclusive")
