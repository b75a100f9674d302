"""Where the candidates agree: a weighted vote of their positions, shared by both predictions.

The global search votes with similarity (``locate.predict``), geometric verification with
inliers (``verdict.predict_verified``); the arithmetic of the vote, the weighted centre and the
uncertainty radius is the same, so it lives here once. No torch: the verdict can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..photos import geo

GPS_NOISE_M = 10.0  # phone GPS error: no prediction is tighter than this


@dataclass(frozen=True)
class Consensus:
    best: int  # the candidate whose neighbourhood carries the most weight
    members: np.ndarray  # candidates within the agreement radius of ``best``
    lat: float  # weighted centre of the members
    lon: float
    agreement: float  # share of all the weight the members hold
    rms_m: float  # weighted spread of the members around the centre

    def radius_m(self, confidence: float, agree_radius_m: float) -> float:
        """The uncertainty circle: the spread (at least GPS noise), widened as confidence drops."""
        return max(self.rms_m, GPS_NOISE_M) + agree_radius_m * (1.0 - confidence)


def vote(
    lat: np.ndarray,
    lon: np.ndarray,
    weights: np.ndarray,
    agree_radius_m: float,
    tiebreak: np.ndarray | None = None,
) -> Consensus:
    """The place most of the weight agrees on.

    Each candidate's support is the weight within ``agree_radius_m`` of it; the best support
    wins, ties to the higher ``tiebreak`` (if given), then to the earlier (better-ranked) one.
    """
    d = geo.haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    close = d <= agree_radius_m
    support = (close * weights[None, :]).sum(1)
    tie = tiebreak if tiebreak is not None else np.zeros(len(lat))
    best = max(range(len(lat)), key=lambda i: (support[i], tie[i], -i))
    members = np.flatnonzero(close[best])
    mw = weights[members]
    c_lat = float(np.average(lat[members], weights=mw))
    c_lon = float(np.average(lon[members], weights=mw))
    spread = geo.haversine_m(c_lat, c_lon, lat[members], lon[members])
    rms = float(np.sqrt(np.average(np.square(spread), weights=mw)))
    agreement = float(support[best] / weights.sum())
    return Consensus(best, members, c_lat, c_lon, agreement, rms)
