"""Geometric verification: is a candidate really the same place as the query?

A global descriptor says two photos *look* alike; it cannot say why, and a photo from another
city always has a nearest neighbour. Verification matches local features between the query and
each of the global search's top K candidates and fits one geometric model to the matches with
OpenCV's USAC MAGSAC (a homography by default; a fundamental matrix as an option). Only matches
consistent with that model count (inliers): two views of the same facade have dozens to
hundreds, unrelated photos a handful. The inliers re-rank the candidates and are the evidence a
viewer draws (query and reference points in original image pixels).

Two kinds of local features, neither needs a download:

- ``patch`` (default): the model's own feature map (the backbone output NetVLAD pools), one
  L2-normalised descriptor per cell, mutual nearest neighbours; Patch-NetVLAD's idea (the
  network's own dense features, matched mutually, verified geometrically) without a second
  network and without its NetVLAD-per-patch descriptors, which measured no better here.
  Positions are cell centres (16 px apart at 640 px). These features were trained to see the
  same place through changes of light: at night, where SIFT finds a median of 5 inliers with
  the right day photo (as many as with a wrong one), they find 45 (wrong ones 10), and
  re-ranking lifts night -> day Recall@1 (benchmarks/README.md, "Night and day").
- ``sift``: OpenCV's SIFT, Lowe's ratio test and a mutual check. Sub-pixel keypoints; precise
  on well-lit photos, blind at night.

References' features are computed on demand and kept in an LRU cache, and, given a store
(library/patchstore.py, the index's ``patches.sqlite``), on disk for the next process; an index
build on ONNX Runtime fills that store from its own forward pass (library/patchfill.py), so a
library's first verified locate finds them there too.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from ..config import ExtractConfig, VerifyConfig
from ..errors import ConfigError
from ..model.patches import LocalFeatures, feature_recipe, patch_features
from ..photos.filestamp import identity, identity_text
from ..photos.images import (
    ImageLoadError,
    load_image,
    oriented_size,
    resize_longer_side,
    to_pixels,
)

_MIN_MATCHES = {"homography": 4, "fundamental": 8}
#: Pixels of a 640 px image: ``ransac_px`` is given at this size and scaled to the working one.
REFERENCE_SIZE = 640


@dataclass
class Verification:
    """One query/candidate pair: inliers and their correspondences in original pixels.

    ``query_xy[i]`` and ``ref_xy[i]`` are one inlier, in continuous pixel coordinates of the
    photos as displayed (EXIF orientation applied, full resolution): a viewer draws them as is.
    """

    inliers: int
    matches: int  # tentative matches before the geometric fit
    query_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    ref_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


# -- local features -------------------------------------------------------------------------------
_sift_local = threading.local()


def _sift(cfg: VerifyConfig):
    key = cfg.max_features
    if getattr(_sift_local, "key", None) != key:
        _sift_local.key, _sift_local.sift = key, cv2.SIFT_create(nfeatures=cfg.max_features)
    return _sift_local.sift


def normalise_contrast(gray: np.ndarray, how: str) -> np.ndarray:
    """Grey levels for detection (``VerifyConfig.sift_contrast``): SIFT's contrast threshold
    is absolute, so a dark, flat photo (dusk, underexposure) loses most of its keypoints unless
    its range is stretched first; "stretch" maps the 1st..99th percentile to 0..255, which
    leaves a well-exposed photo almost as it is."""
    if how != "stretch":
        return gray
    lo, hi = np.percentile(gray, (1.0, 99.0))
    if hi - lo < 1.0:  # a flat image: nothing to stretch
        return gray
    return np.clip((gray.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def sift_features(
    img: Image.Image, original_size: tuple[int, int], cfg: VerifyConfig
) -> LocalFeatures:
    """SIFT keypoints of ``img`` resized to ``cfg.sift_size`` (OpenCV doubles it internally)."""
    work = resize_longer_side(img, cfg.sift_size).convert("L")
    gray = normalise_contrast(np.asarray(work), cfg.sift_contrast)
    kps, desc = _sift(cfg).detectAndCompute(gray, None)
    if desc is None or not kps:
        xy, desc = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    else:
        xy = np.array([k.pt for k in kps], np.float32) + 0.5  # OpenCV: 0 = first pixel's centre
        desc = desc.astype(np.uint8)  # OpenCV's SIFT values are whole numbers in 0..255
    w, h = work.size
    return LocalFeatures(xy, desc, (original_size[0] / w, original_size[1] / h), (int(w), int(h)))


# -- matching and geometry ------------------------------------------------------------------------
def _ratio_mutual(dist: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) that are each other's nearest neighbour in ``dist`` (Q, R) and pass the
    ratio test both ways (nearest < ``ratio`` x second nearest)."""
    if dist.shape[0] < 2 or dist.shape[1] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nn_r = dist.argmin(1)
    nn_q = dist.argmin(0)
    qi = np.flatnonzero(nn_q[nn_r] == np.arange(len(nn_r)))
    ri = nn_r[qi]
    if ratio < 1 and len(qi):
        rows = np.partition(dist[qi], 1, axis=1)[:, :2]
        cols = np.partition(dist[:, ri], 1, axis=0)[:2].T
        ok = (rows[:, 0] < ratio * rows[:, 1]) & (cols[:, 0] < ratio * cols[:, 1])
        qi, ri = qi[ok], ri[ok]
    return qi.astype(np.int64), ri.astype(np.int64)


def match_sift(q: LocalFeatures, r: LocalFeatures, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours (L2) that pass Lowe's ratio test both ways: indices into q, r.

    One matrix product gives every distance, for both directions at once.
    """
    a, b = q.desc.astype(np.float32), r.desc.astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return _ratio_mutual(np.sqrt(np.clip(d2, 0.0, None)), ratio)


def _mutual_best(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) that are each other's most similar in ``sim`` (Q, R): mutual nearest
    neighbours without a ratio test, read off the similarities (no distances needed)."""
    if sim.shape[0] < 2 or sim.shape[1] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nn_r = sim.argmax(1)
    nn_q = sim.argmax(0)
    qi = np.flatnonzero(nn_q[nn_r] == np.arange(len(nn_r)))
    return qi.astype(np.int64), nn_r[qi].astype(np.int64)


def match_patches(
    q: LocalFeatures, r: LocalFeatures, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of the unit-length patch descriptors, with the ratio test.

    Without one (``ratio`` 1, the default) the neighbours come straight from the similarities:
    the same pairs as from distances, at a third of the cost (benchmarks/README.md).
    """
    sim = q.desc.astype(np.float32) @ r.desc.astype(np.float32).T
    if ratio >= 1:
        return _mutual_best(sim)
    return _ratio_mutual(np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None)), ratio)


def fit_inliers(qxy: np.ndarray, rxy: np.ndarray, geometry: str, threshold_px: float) -> np.ndarray:
    """Boolean inlier mask of a USAC MAGSAC fit; all False when too few matches or no model."""
    n = len(qxy)
    if n < _MIN_MATCHES[geometry]:
        return np.zeros(n, bool)
    src, dst = qxy.reshape(-1, 1, 2).astype(np.float32), rxy.reshape(-1, 1, 2).astype(np.float32)
    try:
        if geometry == "homography":
            model, mask = cv2.findHomography(
                src, dst, cv2.USAC_MAGSAC, threshold_px, None, 10_000, 0.999
            )
        else:
            model, mask = cv2.findFundamentalMat(
                src, dst, cv2.USAC_MAGSAC, threshold_px, 0.999, 10_000
            )
    except cv2.error:  # degenerate input (e.g. all points collinear)
        return np.zeros(n, bool)
    if model is None or mask is None:
        return np.zeros(n, bool)
    return mask.ravel().astype(bool)


def verify_pair(q: LocalFeatures, r: LocalFeatures, cfg: VerifyConfig) -> Verification:
    """Match, fit, and report the inliers in original pixels (query's and reference's)."""
    matcher = match_sift if cfg.features == "sift" else match_patches
    qi, ri = matcher(q, r, cfg.ratio)
    # The threshold is given at 640 px, measured in the reference's working pixels; patch
    # positions are quantised to cells, so it is at least one cell's spacing there.
    thr = cfg.ransac_px * max(r.work_size) / REFERENCE_SIZE
    if cfg.features == "patch":
        thr = max(thr, r.work_size[0] / max(len(np.unique(r.xy[:, 0])), 1))
    if len(qi):
        mask = fit_inliers(q.xy[qi], r.xy[ri], cfg.geometry, thr)
    else:
        mask = np.zeros(0, bool)
    return Verification(
        inliers=int(mask.sum()),
        matches=len(qi),
        query_xy=q.original_xy(qi[mask]),
        ref_xy=r.original_xy(ri[mask]),
    )


def rerank(
    scores: Sequence[float],
    inliers: Sequence[int | None],
    min_inliers: int = 0,
    keep_ratio: float = 1.0,
) -> list[int]:
    """Positions re-ranked by geometric evidence; the global score breaks ties.

    Candidates with at least ``keep_ratio`` x the best count (and ``min_inliers``) are all
    verified alike and come first in global-score order: among views that all share plenty of
    geometry (neighbouring frames of one corridor), the count is noise and the global score ranks
    better. The others follow by inliers, then score; counts under ``min_inliers`` are noise
    (unrelated photos reach them) and never reorder. ``keep_ratio`` 1 sorts purely by inliers.
    """

    def evidence(i: int) -> int:
        n = inliers[i]
        return n if n is not None and n >= min_inliers else 0

    best = max((evidence(i) for i in range(len(scores))), default=0)
    bar = max(keep_ratio * best, min_inliers, 1)

    def key(i: int):
        top = evidence(i) >= bar
        return (not top, 0 if top else -evidence(i), -scores[i], i)

    return sorted(range(len(scores)), key=key)


# -- the verifier a Locator keeps -----------------------------------------------------------------
class FeatureStore(Protocol):
    """Where references' features outlive the process (patchstore.PatchStore)."""

    def get(self, keys: Sequence[tuple[str, str]], recipe: str) -> dict[int, LocalFeatures]: ...

    def put(self, items: Sequence[tuple[str, str, LocalFeatures]], recipe: str) -> None: ...


class Verifier:
    """Local features of queries and references, and the verification of K candidates.

    References' features are computed from their photo on first use and kept in an LRU cache of
    ``cfg.cache_size`` images (keyed by path and ``filestamp.identity``, so an edited photo is
    re-read, and so is one swapped for another of the same size with its mtime put back). With
    a ``store``, an LRU miss asks it before computing, and what is computed is written to it:
    keyed the same way and by ``recipe`` (these settings and ``model_key``, what names the
    model's weights and engine), so features of another model, engine or size are never reused.
    """

    def __init__(
        self,
        model=None,
        extract_cfg: ExtractConfig | None = None,
        cfg: VerifyConfig | None = None,
        *,
        store: FeatureStore | None = None,
        model_key: str = "",
    ):
        self.cfg = (cfg or VerifyConfig()).validate()
        if self.cfg.features == "patch" and model is None:
            raise ConfigError("patch features need the model; pass it to Verifier")
        self.model = model  # an InferenceModel (or a torch network, run as one)
        self.extract_cfg = extract_cfg or ExtractConfig()
        self._cache: OrderedDict[tuple, LocalFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.store = store
        self.recipe = self._recipe(model_key)

    def _recipe(self, model_key: str) -> str:
        """A digest of everything that shapes a reference's features here."""
        return feature_recipe(self.extract_cfg, self.cfg, model_key)

    # features
    def features_of_image(
        self,
        img: Image.Image,
        original_size: tuple[int, int],
        local_map: np.ndarray | None = None,
    ) -> LocalFeatures:
        """Features of a decoded photo (longer side ``extract_cfg.image_size``).

        For patches, pass the model's map of this very image when it is at hand (the query's
        comes with its global descriptor) to skip a forward pass.
        """
        if self.cfg.features == "sift":
            return sift_features(img, original_size, self.cfg)
        if local_map is None:
            local_map = self._maps([to_pixels(img)])[0]
        return patch_features(local_map, img.size, original_size)

    def _maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The backbone maps (D, h, w) of photos' pixels, batched by size, from the model's own
        engine and precision (ONNX Runtime fp32, or torch in bf16 where the hardware runs it
        natively: the references' maps are most of a cold verification's time)."""
        from ..model.inference import as_inference_model

        net = as_inference_model(self.model, self.extract_cfg)
        self.model = net  # wrapped once
        out: list[np.ndarray | None] = [None] * len(images)
        shapes: dict[tuple, list[int]] = {}
        for i, px in enumerate(images):
            shapes.setdefault(px.shape, []).append(i)
        for idxs in shapes.values():
            maps = net.maps_of(np.stack([images[i] for i in idxs]))
            for i, m in zip(idxs, maps, strict=True):
                out[i] = m
        return out  # type: ignore[return-value]

    def _load(self, path: Path) -> tuple[Image.Image, tuple[int, int]]:
        ec = self.extract_cfg
        size = self.cfg.sift_size if self.cfg.features == "sift" else ec.image_size
        # SIFT works at a smaller size: let big JPEGs decode at a fraction of their size.
        draft = ec.jpeg_draft or self.cfg.features == "sift"
        img = load_image(path, size, ec.max_pixels, draft=draft)
        return img, oriented_size(path)

    def reference_features(self, paths: Sequence[str | os.PathLike]) -> list[LocalFeatures | None]:
        """Features of each reference photo; None where the photo cannot be read any more."""
        out: list[LocalFeatures | None] = [None] * len(paths)
        todo: list[tuple[int, tuple]] = []
        for i, p in enumerate(paths):
            try:
                st = os.stat(p)
            except OSError:
                continue
            key = (str(p), *identity(p, st))
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    out[i] = hit
                    continue
            todo.append((i, key))
        if self.store is not None and todo:
            stored = self.store.get(
                [(key[0], identity_text(key[1:])) for _, key in todo], self.recipe
            )
            for j, feats in stored.items():
                i, key = todo[j]
                out[i] = feats
                self._remember(key, feats)
            todo = [t for j, t in enumerate(todo) if j not in stored]
        loaded: list[tuple[int, tuple, Image.Image, tuple[int, int]]] = []
        for i, key in todo:
            try:
                img, orig = self._load(Path(paths[i]))
            except (ImageLoadError, OSError):
                continue
            loaded.append((i, key, img, orig))
        if self.cfg.features == "patch" and loaded:
            maps = self._maps([to_pixels(img) for _, _, img, _ in loaded])
        else:
            maps = [None] * len(loaded)
        made: list[tuple[str, str, LocalFeatures]] = []
        for (i, key, img, orig), m in zip(loaded, maps, strict=True):
            feats = self.features_of_image(img, orig, m)
            out[i] = feats
            self._remember(key, feats)
            made.append((key[0], identity_text(key[1:]), feats))
        if self.store is not None and made:
            self.store.put(made, self.recipe)
        return out

    def _remember(self, key: tuple, feats: LocalFeatures) -> None:
        with self._lock:
            self._cache[key] = feats
            while len(self._cache) > self.cfg.cache_size:
                self._cache.popitem(last=False)

    def verify(
        self, query: LocalFeatures, paths: Sequence[str | os.PathLike]
    ) -> list[Verification | None]:
        """The query against each reference; None where a reference cannot be read."""
        refs = self.reference_features(paths)
        return [None if r is None else verify_pair(query, r, self.cfg) for r in refs]

    def verify_paths(
        self, query_path: str | os.PathLike, paths: Sequence[str | os.PathLike]
    ) -> list[Verification | None]:
        """Convenience for scripts and tests: the query read from disk (not cached)."""
        img, orig = self._load(Path(query_path))
        return self.verify(self.features_of_image(img, orig), paths)


def rerank_ranked(
    verifier: Verifier,
    query_paths: Sequence[str | os.PathLike],
    db_paths: Sequence[str | os.PathLike],
    ranked: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``ranked`` (Q, k) database indices, best first (-1 pads), with each query's first
    ``verifier.cfg.top_k`` re-ranked by verification: Recall@N after re-ranking (eval --verify).

    A query that cannot be read keeps its global order.
    """
    cfg = verifier.cfg
    out = np.array(ranked, dtype=np.int64, copy=True)
    for q, path in enumerate(query_paths):
        head = [int(i) for i in out[q, : cfg.top_k] if i >= 0]
        if head:
            try:
                checks = verifier.verify_paths(path, [db_paths[i] for i in head])
            except ImageLoadError:
                checks = None
            if checks is not None:
                inl = [c.inliers if c is not None else None for c in checks]
                scores = [-float(j) for j in range(len(head))]  # global order breaks ties
                order = rerank(scores, inl, cfg.min_inliers, cfg.keep_ratio)
                out[q, : len(head)] = [head[j] for j in order]
        if progress is not None:
            progress(q + 1, len(query_paths))
    return out
