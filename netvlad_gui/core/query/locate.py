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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import ExtractConfig, LocateConfig
from ..library.index import LibraryIndex, SearchHit
from ..model.features import Cancelled, forward, inference_model, resolve_device
from ..model.runtime import backbone_precision
from ..photos import geo
from ..photos.images import ImageLoadError, load_image, to_tensor
from .consensus import vote
from .result import LocateResult, Match
from .verdict import Evidence, calibrated_similarity, decide


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


class Locator:
    """Model + index (+ verifier), loaded once: what the CLI and the GUI's worker keep warm."""

    def __init__(
        self,
        index: LibraryIndex,
        *,
        extract_cfg: ExtractConfig | None = None,
        locate_cfg: LocateConfig | None = None,
    ):
        from ..model.checkpoint import load_checkpoint
        from .verify import Verifier

        self.index = index
        self.extract_cfg = (extract_cfg or ExtractConfig()).validate()
        self.cfg = (locate_cfg or LocateConfig()).validate()
        self.device = resolve_device(self.extract_cfg.device)
        if not index.model_path.exists():
            raise FileNotFoundError(f"the index in {index.dir} has no model; build it again")
        model = load_checkpoint(index.model_path).to(self.device)
        self.model = inference_model(model, self.extract_cfg)  # folded once, not per photo
        self.calibration = index.calibration()
        # Built even when verification is off by default: ``locate(verify=True)`` may ask.
        self.verifier = Verifier(self.model, self.extract_cfg, self.cfg.verify)
        self._described: tuple | None = None  # the last photo's (key, image, descriptor, map)

    def locate(
        self, path: str | os.PathLike, top_n: int | None = None, *, verify: bool | None = None
    ) -> LocateResult:
        """Locate one photo; a bad photo raises ImageLoadError with the reason.

        ``verify`` (default: ``cfg.verify.enabled``) checks the top ``cfg.verify.top_k``
        candidates geometrically, re-ranks them by inliers and bases the confidence and the
        verdict on them. A GUI can show ``verify=False`` at once and refine with ``verify=True``.
        """
        if top_n is None:
            top_n = self.cfg.top_n
        else:
            replace(self.cfg, top_n=top_n).validate()
        vcfg = self.cfg.verify
        verify = vcfg.enabled if verify is None else verify
        # Patches verify from the feature map: keep it even for a quick unverified answer while
        # verification is on, so that the refine call right after does not describe again.
        with_map = vcfg.features == "patch" and (verify or vcfg.enabled)
        img, desc, local_map = self.describe(path, with_map=with_map)
        k = max(top_n, vcfg.top_k) if verify else top_n
        hits = self.index.search(desc[None, :], k)[0]
        checks = self.verify_hits(path, img, hits, local_map) if verify else None
        return self._result(str(path), hits, top_n, checks)

    def describe(
        self, path: str | os.PathLike, *, with_map: bool = False
    ) -> tuple[Image.Image, np.ndarray, torch.Tensor | None]:
        """The decoded photo, its global descriptor and (``with_map``) the model's feature map.

        One forward pass gives both the descriptor and the map the patch features come from.
        The last photo's are kept, so that ``locate(verify=True)`` right after
        ``locate(verify=False)`` (show at once, then refine) does not describe it again.
        """
        try:
            st = os.stat(path)
            key = (str(path), st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        last = self._described
        if (
            key is not None
            and last is not None
            and last[0] == key
            and (last[3] is not None or not with_map)
        ):
            return last[1], last[2], last[3]
        out = self._describe(path, with_map)
        self._described = (key, *out)
        return out

    def _describe(
        self, path: str | os.PathLike, with_map: bool
    ) -> tuple[Image.Image, np.ndarray, torch.Tensor | None]:
        ec = self.extract_cfg
        img = load_image(Path(path), ec.image_size, ec.max_pixels, draft=ec.jpeg_draft)
        batch = to_tensor(img).unsqueeze(0)
        with torch.inference_mode():
            if not with_map:
                return img, forward(self.model, batch, ec)[0], None
            # One pass gives both: the map (in the backbone's precision, bf16 where native) for
            # the patches, and the descriptor pooled from it in fp32 as ``forward`` pools it.
            x = batch.to(self.device)
            if ec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            low = backbone_precision(ec, self.device.type) == "bf16"
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=low):
                local = self.model.local_features(x)
            local = local.float()
            pooled = self.model.pool(local)
            if getattr(self.model, "whiten", None) is not None:
                pooled = self.model.whiten(pooled)
        return img, pooled.float().cpu().numpy()[0], local[0].cpu()

    def verify_hits(
        self,
        path: str | os.PathLike,
        img: Image.Image,
        hits: list[SearchHit],
        local_map: torch.Tensor | None = None,
    ) -> list:
        """Verification of the first ``cfg.verify.top_k`` hits (None where unreadable)."""
        from .verify import oriented_size

        query = self.verifier.features_of_image(img, oriented_size(path), local_map)
        return self.verifier.verify(query, [h.path for h in hits[: self.cfg.verify.top_k]])

    def _result(
        self,
        query: str,
        hits: list[SearchHit],
        top_n: int | None = None,
        checks: list | None = None,
    ) -> LocateResult:
        """The result from the global hits (best first) and, when verified, their checks."""
        from .verdict import predict_verified
        from .verify import rerank

        top_n = top_n or self.cfg.top_n
        res = LocateResult(query=query, verified=checks is not None)
        truth = geo.read_gps(query)
        if truth.ok:
            res.true_lat, res.true_lon = truth.point.lat, truth.point.lon
        pred = predict(hits[:top_n], self.calibration, self.cfg)
        inliers: list[int | None] = [None] * len(hits)
        order = list(range(len(hits)))
        best_inliers = None
        if checks is not None:
            inliers[: len(checks)] = [c.inliers if c is not None else None for c in checks]
            # Verified candidates first, by inliers; the unverified rest keeps its order.
            nv = len(checks)
            vc = self.cfg.verify
            order = rerank(
                [h.score for h in hits[:nv]], inliers[:nv], vc.min_inliers, vc.keep_ratio
            )
            order += list(range(nv, len(hits)))
            counted = [n for n in inliers[:nv] if n is not None]
            best_inliers = max(counted) if counted else None
        shown = order[:top_n]
        lat = lon = None
        members: set[int] = set()  # positions in ``hits``
        if pred is not None:
            lat, lon, conf, radius = pred.lat, pred.lon, pred.confidence, pred.radius_m
            members = set(pred.members)
        vpred = predict_verified(hits, inliers, self.cfg) if best_inliers is not None else None
        if vpred is not None:
            lat, lon, conf, radius = vpred.lat, vpred.lon, vpred.confidence, vpred.radius_m
            members, best_inliers = set(vpred.members), vpred.inliers
        elif best_inliers is not None and pred is not None:
            # Nothing verified: the global guess stands, with the inliers' (low) confidence.
            from .verdict import inlier_evidence

            conf = min(conf, inlier_evidence(best_inliers, self.cfg.verify))
        if lat is not None:
            res.lat, res.lon = lat, lon
            res.confidence, res.radius_m = float(conf), float(radius)
            if truth.ok:
                res.error_m = float(geo.haversine_m(lat, lon, res.true_lat, res.true_lon))
        res.verdict, res.verdict_reason = decide(
            Evidence(
                has_location=lat is not None,
                confidence=res.confidence,
                similarity=calibrated_similarity(hits[0].score, self.calibration) if hits else None,
                best_inliers=best_inliers,
            ),
            self.cfg,
        )
        for rank, i in enumerate(shown, 1):
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

    def locate_many(
        self,
        paths: Iterable[str | os.PathLike],
        top_n: int | None = None,
        *,
        cancel: Callable[[], bool] | None = None,
        verify: bool | None = None,
    ) -> Iterator[LocateResult]:
        """One result per photo; a photo that cannot be read gives a result with ``error`` set."""
        for p in paths:
            if cancel is not None and cancel():
                raise Cancelled()
            try:
                yield (
                    self.locate(p, top_n)
                    if verify is None  # the configured default; keeps locate(path, top_n) hooks
                    else self.locate(p, top_n, verify=verify)
                )
            except ImageLoadError as exc:
                yield LocateResult(query=str(Path(p)), error=str(exc))
