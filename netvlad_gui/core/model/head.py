"""The model's head in numpy: NetVLAD or f_max pooling, then PCA-whitening, and NetVLAD's k-means
initialisation, so that a backbone run by ONNX Runtime needs no torch at all.

The same arithmetic as ``pooling.NetVLAD``/``FMax``/``Whitening`` (which use the initialisation
and sampling here too), in float32: descriptors agree with torch's to cosine 1.0000 (tests).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: Soft-assignment ratio the paper's initialisation aims at between the nearest and the
#: second-nearest cluster of a typical descriptor (``layerVLAD``: alpha = -log(0.01) / gap).
ASSIGNMENT_RATIO = 100.0
#: k-means wants this many samples per centroid (faiss's own minimum before it warns)
KMEANS_POINTS_PER_CLUSTER = 39
_EPS = 1e-12  # torch's F.normalize


def l2_normalise(x: np.ndarray, axis: int) -> np.ndarray:
    """``x / max(|x|, 1e-12)`` along ``axis``, as torch's ``F.normalize``."""
    norm = np.sqrt(np.einsum("...i,...i->...", np.moveaxis(x, axis, -1), np.moveaxis(x, axis, -1)))
    return x / np.expand_dims(np.maximum(norm, _EPS), axis)


@dataclass
class Head:
    """Pooling and whitening of backbone maps (B, D, H, W) -> global descriptors (B, dim).

    ``pooling`` is "netvlad" (``centroids`` (K, D), assignment ``weight`` (K, D), ``bias`` (K))
    or "fmax"; ``whiten_weight`` (out, in) and ``whiten_bias`` (out) when the model whitens.
    """

    pooling: str
    local_dim: int
    centroids: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    whiten_weight: np.ndarray | None = None
    whiten_bias: np.ndarray | None = None

    @classmethod
    def from_state(cls, config: Mapping, state: Mapping[str, np.ndarray], local_dim: int) -> Head:
        """The head of a checkpoint: its config dict and state dict (numpy arrays)."""
        f32 = lambda k: np.asarray(state[k], dtype=np.float32)
        head = cls(config.get("pooling", "netvlad"), int(local_dim))
        if head.pooling == "netvlad":
            head.centroids = f32("pool.centroids")
            head.weight = f32("pool.conv.weight").reshape(len(head.centroids), -1)
            head.bias = f32("pool.conv.bias").reshape(-1)
        if "whiten.weight" in state:
            head.whiten_weight, head.whiten_bias = f32("whiten.weight"), f32("whiten.bias")
        return head

    @property
    def pool_dim(self) -> int:
        return self.centroids.size if self.pooling == "netvlad" else self.local_dim

    @property
    def dim(self) -> int:
        return len(self.whiten_weight) if self.whiten_weight is not None else self.pool_dim

    def __call__(self, maps: np.ndarray, *, whiten: bool = True) -> np.ndarray:
        """Global descriptors (B, dim) float32 of maps (B, D, H, W); ``whiten=False`` stops
        before whitening (what whitening is fitted on)."""
        maps = np.asarray(maps, dtype=np.float32)
        x = maps.reshape(maps.shape[0], maps.shape[1], -1)  # (B, D, N)
        if self.pooling == "netvlad":
            out = netvlad(x, self.centroids, self.weight, self.bias)
        else:
            out = l2_normalise(x.max(axis=2), 1)
        if whiten and self.whiten_weight is not None:
            out = l2_normalise(out @ self.whiten_weight.T + self.whiten_bias, 1)
        return np.ascontiguousarray(out, dtype=np.float32)


def netvlad(x: np.ndarray, centroids: np.ndarray, weight: np.ndarray, bias: np.ndarray):
    """NetVLAD (eq. 4) of local features (B, D, N): (B, K*D), cluster-major, intra-normalised
    per cluster, then L2-normalised as a whole (``pooling.NetVLAD.forward``)."""
    x = l2_normalise(x, 1)
    logits = np.matmul(weight, x) + bias[:, None]  # (B, K, N)
    logits -= logits.max(axis=1, keepdims=True)
    assign = np.exp(logits)
    assign /= assign.sum(axis=1, keepdims=True)
    vlad = np.matmul(assign, x.transpose(0, 2, 1))  # (B, K, D)
    vlad -= assign.sum(axis=2, keepdims=True) * centroids[None]
    vlad = l2_normalise(vlad, 2)
    return l2_normalise(vlad.reshape(len(x), -1), 1)


def sample_from_feature_maps(
    maps: Iterable[np.ndarray], per_image: int, seed: int, local_dim: int
) -> np.ndarray:
    """Up to ``per_image`` L2-normalised local descriptors (M, D) per backbone map (D, H', W'),
    at seeded random positions, in order: what NetVLAD's k-means is run on."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for fmap in maps:
        f = np.asarray(fmap, dtype=np.float32)
        f = l2_normalise(f.reshape(f.shape[0], -1), 0)  # (D, N)
        n = f.shape[1]
        pick = rng.choice(n, size=min(per_image, n), replace=False)
        out.append(f[:, np.sort(pick)].T)
    if not out:
        return np.zeros((0, local_dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def kmeans_netvlad(
    descriptors: np.ndarray, num_clusters: int, *, iters: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The paper's initialisation from sampled local descriptors (N, D): (centroids (K, D),
    assignment weight (K, D), alpha); the assignment has no bias.

    k-means (faiss, Euclidean) on L2-normalised descriptors gives the centroids. The assignment
    gets ``alpha * c_k / |c_k|``, with alpha chosen so that the mean log-ratio between the top-1
    and top-2 soft assignment of the samples is ln(100).

    The paper writes the assignment as ``exp(-alpha |x - c_k|^2)``, i.e. weight ``2 alpha c_k``
    and bias ``-alpha |c_k|^2``. That factor 2 belongs with an alpha computed from *squared
    distances*; combining it with this alpha (computed from dot products, as ``layerVLAD``
    does) would square the ratio to 1e4, not 100.
    """
    import faiss  # heavy import, only needed here

    x = np.ascontiguousarray(np.asarray(descriptors, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"NetVLAD init expects descriptors (N, D), got {x.shape}")
    dim = x.shape[1]
    if not np.isfinite(x).all():
        raise ValueError("NetVLAD init: descriptors contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    if len(x) < num_clusters:
        raise ValueError(
            f"NetVLAD init needs at least {num_clusters} non-zero descriptors "
            f"(one per cluster), got {len(x)}"
        )
    if len(x) < KMEANS_POINTS_PER_CLUSTER * num_clusters:
        log.info(
            "k-means on %d descriptors for %d clusters (%d per cluster is comfortable)",
            len(x),
            num_clusters,
            KMEANS_POINTS_PER_CLUSTER,
        )
    kmeans = faiss.Kmeans(
        dim,
        num_clusters,
        niter=iters,
        seed=seed,
        spherical=False,
        verbose=False,
        min_points_per_centroid=1,  # faiss would print its own warning on small libraries
    )
    kmeans.train(x)
    centroids = np.asarray(kmeans.centroids, dtype=np.float32).reshape(num_clusters, dim)
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    alpha = alpha_for_ratio(x @ unit.T, ASSIGNMENT_RATIO)
    return centroids, (alpha * unit).astype(np.float32), alpha


def alpha_for_ratio(dots: np.ndarray, ratio: float) -> float:
    """alpha such that mean(alpha * (top1 - top2)) = ln(ratio) over the rows of ``dots``."""
    if dots.shape[1] < 2:
        return 1.0  # a single cluster: the softmax is 1 whatever alpha is
    top2 = -np.partition(-dots, 1, axis=1)[:, :2]
    gap = float(np.mean(top2[:, 0].astype(np.float64) - top2[:, 1]))
    if not gap > 0:
        raise ValueError("NetVLAD init: descriptors are all equidistant from two clusters")
    return math.log(ratio) / gap


def per_image(num_clusters: int, descriptors_per_image: int, images: int) -> int:
    """Descriptors to sample per image: the configured count, more for a small library, so that
    k-means gets enough samples per cluster (19 photos x 100 is too few for 64 clusters)."""
    wanted = math.ceil(KMEANS_POINTS_PER_CLUSTER * num_clusters / max(images, 1))
    return max(descriptors_per_image, wanted)
