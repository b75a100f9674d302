"""From a photo to a predicted place: retrieve the top matches, then let them vote.

The prediction is a similarity-weighted consensus of the matches that agree within 25 m. Its
confidence multiplies two things a user can reason about: how much of the top-N agrees, and how
the best agreeing score compares with what same-place and different-place pairs of this very
library score (calibrated when the index was built). A photo from elsewhere scores like a
different-place pair, so it comes back with a low confidence even when the top-N happen to agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import geo
from .config import ExtractConfig, LocateConfig
from .features import Cancelled, extract_one, inference_model, resolve_device
from .images import ImageLoadError
from .index import LibraryIndex, SearchHit

GPS_NOISE_M = 10.0  # phone GPS error: no prediction is tighter than this


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

    def to_json(self) -> dict:
        """The CLI's --json contract."""
        out = {
            "query": self.query,
            "lat": self.lat,
            "lon": self.lon,
            "confidence": self.confidence,
            "radius_m": self.radius_m,
            "error_m": self.error_m,
            "matches": [
                {k: m[k] for k in ("path", "lat", "lon", "score", "distance_m")}
                for m in map(asdict, self.matches)
            ],
        }
        if self.error:
            out["error"] = self.error
        return out


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
    d = geo.haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    close = d <= cfg.agree_radius_m
    support = (close * w[None, :]).sum(1)
    best = int(np.argmax(support))  # ties go to the better-ranked hit
    members = np.flatnonzero(close[best])
    mw = w[members]
    p_lat = float(np.average(lat[members], weights=mw))
    p_lon = float(np.average(lon[members], weights=mw))
    agreement = float(support[best] / w.sum())

    top = float(scores[members].max())
    lo = calibration.get("neg_best_median")
    # The typical best same-place score: what a true match of this library looks like.
    hi = calibration.get("pos_best_median", calibration.get("pos_median"))
    if lo is not None and hi is not None and hi > lo + 1e-3:
        distinct = (top - lo) / (hi - lo)
    elif lo is not None:
        distinct = (top - lo) / max(1.0 - lo, 1e-3) * 2.0
    else:  # no calibration (a library without GPS pairs): trust agreement only, halved
        distinct = 0.5
    distinct = float(np.clip(distinct, 0.0, 1.0))
    confidence = float(np.clip(agreement * distinct, 0.0, 1.0))

    spread = geo.haversine_m(p_lat, p_lon, lat[members], lon[members])
    rms = float(np.sqrt(np.average(np.square(spread), weights=mw)))
    radius = max(rms, GPS_NOISE_M) + cfg.agree_radius_m * (1.0 - confidence)
    return Prediction(p_lat, p_lon, confidence, radius, [cand[i] for i in members])


class Locator:
    """Model + index, loaded once: what the CLI and the GUI's worker keep warm."""

    def __init__(
        self,
        index: LibraryIndex,
        *,
        extract_cfg: ExtractConfig | None = None,
        locate_cfg: LocateConfig | None = None,
    ):
        from .checkpoint import load_checkpoint

        self.index = index
        self.extract_cfg = (extract_cfg or ExtractConfig()).validate()
        self.cfg = (locate_cfg or LocateConfig()).validate()
        self.device = resolve_device(self.extract_cfg.device)
        if not index.model_path.exists():
            raise FileNotFoundError(f"the index in {index.dir} has no model; build it again")
        model = load_checkpoint(index.model_path).to(self.device)
        self.model = inference_model(model, self.extract_cfg)  # folded once, not per photo
        self.calibration = index.calibration()

    def locate(self, path: str | os.PathLike, top_n: int | None = None) -> LocateResult:
        """Locate one photo; a bad photo raises ImageLoadError with the reason."""
        if top_n is None:
            top_n = self.cfg.top_n
        else:
            replace(self.cfg, top_n=top_n).validate()
        desc = extract_one(self.model, path, self.extract_cfg)
        hits = self.index.search(desc[None, :], top_n)[0]
        return self._result(str(path), hits)

    def _result(self, query: str, hits: list[SearchHit]) -> LocateResult:
        res = LocateResult(query=query)
        truth = geo.read_gps(query)
        if truth.ok:
            res.true_lat, res.true_lon = truth.point.lat, truth.point.lon
        pred = predict(hits, self.calibration, self.cfg)
        if pred is not None:
            res.lat, res.lon = pred.lat, pred.lon
            res.confidence, res.radius_m = pred.confidence, pred.radius_m
            if truth.ok:
                res.error_m = float(geo.haversine_m(pred.lat, pred.lon, res.true_lat, res.true_lon))
        members = set(pred.members) if pred else set()
        for rank, h in enumerate(hits, 1):
            dist = None
            if pred is not None and h.image.has_gps:
                dist = float(geo.haversine_m(pred.lat, pred.lon, h.image.lat, h.image.lon))
            res.matches.append(
                Match(
                    rank,
                    str(h.path),
                    h.image.lat,
                    h.image.lon,
                    h.score,
                    dist,
                    h.id,
                    rank - 1 in members,
                )
            )
        return res

    def locate_many(
        self,
        paths: Iterable[str | os.PathLike],
        top_n: int | None = None,
        *,
        cancel: Callable[[], bool] | None = None,
    ) -> Iterator[LocateResult]:
        """One result per photo; a photo that cannot be read gives a result with ``error`` set."""
        for p in paths:
            if cancel is not None and cancel():
                raise Cancelled()
            try:
                yield self.locate(p, top_n)
            except ImageLoadError as exc:
                yield LocateResult(query=str(Path(p)), error=str(exc))
