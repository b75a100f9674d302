"""A photo's answer at one stage, built from the evidence its session gathered, in one place.

The global stage rests on the search alone: ``predict``, a similarity-weighted consensus of the
top-N that agree within 25 m. Its confidence multiplies two things a user can reason about: how
much of the top-N agrees, and how the best agreeing score compares with what same-place and
different-place pairs of this very library score (calibrated when the index was built). A photo
from elsewhere scores like a different-place pair, so it comes back with a low confidence even
when the top-N happen to agree. The verified stage adds the geometric check of the top K: the candidates'
inliers vote (``verdict.predict_verified``), and the matches are listed in the order that decided
the answer: the verified place's members by inliers first (match #1 is the one the verdict rests
on), then the rest as verification re-ranked them. A stage that is not final carries no verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import LocateConfig
from ..library.index import SearchHit
from ..photos import geo
from ..photos.light import Light
from .consensus import vote
from .result import GLOBAL, VERIFIED, LocateResult, Match
from .verdict import (
    SIMILAR_ONLY,
    calibrated_similarity,
    decide,
    inlier_evidence,
    light_change,
    predict_verified,
)
from .verdict import Evidence as VerdictEvidence
from .verify import Verification, rerank


@dataclass
class Prediction:
    lat: float
    lon: float
    confidence: float
    radius_m: float
    members: list[int]  # positions in the hit list that agree


def predict(
    hits: list[SearchHit],
    calibration: dict[str, float] | None = None,
    cfg: LocateConfig | None = None,
) -> Prediction | None:
    """Similarity-weighted consensus of the hits that agree within ``cfg.agree_radius_m``."""
    cfg = cfg or LocateConfig()
    calibration = calibration or {}
    cand = [i for i, h in enumerate(hits) if h.image.has_gps and h.score >= cfg.min_score]
    if not cand:
        return None
    scores = np.array([hits[i].score for i in cand])
    lat = np.array([hits[i].image.lat for i in cand])
    lon = np.array([hits[i].image.lon for i in cand])
    floor = calibration.get("neg_median", float(scores.min()) - 0.05)
    w = np.clip(scores - floor, 0.0, None) + 1e-6
    c = vote(lat, lon, w, cfg.agree_radius_m)  # ties go to the better-ranked hit

    top = float(scores[c.members].max())
    # How the best agreeing score compares with what a true match of this library scores;
    # without calibration (a library without GPS pairs) agreement only counts, halved.
    distinct = calibrated_similarity(top, calibration)
    if distinct is None:
        distinct = 0.5
    confidence = float(np.clip(c.agreement * distinct, 0.0, 1.0))
    radius = c.radius_m(confidence, cfg.agree_radius_m)
    return Prediction(c.lat, c.lon, confidence, radius, [cand[i] for i in c.members])


#: Why a verified stage rests on the global search alone.
NO_REFERENCE_READ = (
    "not verified: none of the best matches' photos could be read (library folder moved?)"
)


#: Why a photo gets no place although the search found similar photos.
NO_GPS_LIBRARY = "this library has no GPS: similar photos only"
NO_GPS_MATCHES = "none of the best matches has GPS: similar photos only"


@dataclass
class Evidence:
    """What a session knows about one photo: its search hits, its own GPS, and the checks."""

    query: str
    hits: list[SearchHit]  # best first; as many as the largest stage needs
    truth: geo.GpsResult | None = None  # the photo's own GPS (None: not read, e.g. a frame)
    checks: list[Verification | None] | None = None  # of hits[:top_k]; None: not verified
    library_has_gps: bool = True  # False: no photo of the library has a position
    light: Light | None = None  # the photo's light (photos/light.py); None: not measured


def build_answer(
    ev: Evidence,
    calibration: dict[str, float],
    cfg: LocateConfig,
    *,
    final: bool,
    reason: str = "",
) -> LocateResult:
    """The result of ``ev``: the verified answer when it holds checks, else the global one.

    ``final`` False gives a provisional stage (no verdict); ``reason`` overrides the verdict's
    own (e.g. "stopped before the geometric check").
    """
    hits, checks = ev.hits, ev.checks
    if checks is not None and all(c is None for c in checks):
        # Not one reference could be read (the library moved or was deleted): nothing was
        # verified, and the answer must not say it was.
        checks = None
        reason = reason or NO_REFERENCE_READ
    top_n = cfg.top_n
    res = LocateResult(
        query=ev.query, verified=checks is not None, stage=VERIFIED if checks else GLOBAL
    )
    res.final = final
    if ev.truth is not None and ev.truth.ok:
        res.true_lat, res.true_lon = ev.truth.point.lat, ev.truth.point.lon
    pred = predict(hits[:top_n], calibration, cfg)
    lat = lon = None
    conf, radius = 0.0, None
    members: set[int] = set()  # positions in ``hits``
    if pred is not None:
        lat, lon, conf, radius = pred.lat, pred.lon, pred.confidence, pred.radius_m
        members = set(pred.members)
    order = list(range(len(hits)))
    inliers: list[int | None] = [None] * len(hits)
    best_inliers = None
    if checks is not None:
        inliers[: len(checks)] = [c.inliers if c is not None else None for c in checks]
        order, best_inliers, vpred = _verified_order(hits, inliers, len(checks), cfg)
        if vpred is not None:
            lat, lon, conf, radius = vpred.lat, vpred.lon, vpred.confidence, vpred.radius_m
            members = set(vpred.members)
        elif best_inliers is not None and pred is not None:
            # Nothing verified: the global guess stands, with the inliers' (low) confidence.
            conf = min(conf, inlier_evidence(best_inliers, cfg.verify))
    if lat is not None:
        res.lat, res.lon = lat, lon
        res.confidence, res.radius_m = float(conf), float(radius)
        if res.true_lat is not None:
            res.error_m = float(geo.haversine_m(lat, lon, res.true_lat, res.true_lon))
    res.best_inliers = best_inliers
    if final and lat is None:  # no match with GPS: nothing to place, only similar photos
        res.verdict = SIMILAR_ONLY
        res.verdict_reason = reason or (NO_GPS_MATCHES if ev.library_has_gps else NO_GPS_LIBRARY)
    elif final:
        similarity = calibrated_similarity(hits[0].score, calibration) if hits else None
        light = light_change(ev.light, cfg.verdict)
        decision = decide(
            VerdictEvidence(True, res.confidence, similarity, best_inliers, light), cfg
        )
        res.verdict = decision.verdict
        res.verdict_reason = f"{reason}; {decision.reason}" if reason else decision.reason
    for rank, i in enumerate(order[:top_n], 1):
        h = hits[i]
        dist = None
        if lat is not None and h.image.has_gps:
            dist = float(geo.haversine_m(lat, lon, h.image.lat, h.image.lon))
        m = Match(rank, str(h.path), h.image.lat, h.image.lon, h.score, dist, h.id)
        m.agrees, m.score_rank = i in members, i + 1
        if checks is not None and i < len(checks) and checks[i] is not None:
            m.inliers = checks[i].inliers
            m.query_xy, m.ref_xy = checks[i].query_xy, checks[i].ref_xy
        res.matches.append(m)
    return res


def _verified_order(
    hits: Sequence[SearchHit], inliers: list[int | None], checked: int, cfg: LocateConfig
):
    """(order of the hits, the inliers the verdict rests on, the verified prediction or None).

    Verification re-ranks the checked candidates (``verify.rerank``); the unchecked rest keeps
    its global order. When the inliers place the photo, that place's members come first, most
    inliers first, so match #1 is the evidence the verdict names.
    """
    vc = cfg.verify
    order = rerank(
        [h.score for h in hits[:checked]], inliers[:checked], vc.min_inliers, vc.keep_ratio
    )
    order += list(range(checked, len(hits)))
    counted = [n for n in inliers[:checked] if n is not None]
    best = max(counted) if counted else None
    vpred = predict_verified(hits, inliers, cfg) if best is not None else None
    if vpred is None:
        return order, best, None
    position = {i: p for p, i in enumerate(order)}
    lead = sorted(vpred.members, key=lambda i: (-(inliers[i] or 0), position[i]))
    rest = [i for i in order if i not in set(lead)]
    return lead + rest, vpred.inliers, vpred
