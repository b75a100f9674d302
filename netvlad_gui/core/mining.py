"""Weak supervision from positions: potential positives, definite negatives, hard-negative mining.

The paper (Arandjelović et al. 2016, sec. 4) and its code (Relja/netvlad ``trainWeakly.m``):

- potential positives of a query lie within 10 m (and, for dbStruct sets, farther than 1 m: the
  same panorama is trivial); the best one is the nearest in descriptor space;
- definite negatives lie beyond 25 m;
- per query, ~1000 random negatives plus the 10 hardest from the previous visit are ranked in the
  descriptor cache, and up to 10 of those that violate the margin make the training tuple;
- the cache holds descriptors of every training image and is refreshed every N queries.

Also here: extracting a whole set's descriptors (the cache; sharded over ranks under DDP), and the
k-means + alpha initialisation of an untrained NetVLAD from a set of images.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from .config import ExtractConfig
from .datasets import PlaceSet
from .errors import DatasetError
from .features import extract
from .model import PlaceModel

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


# --- who is a positive, who is a negative ---------------------------------------------------


class GroundTruth:
    """Potential positives and definite negatives of each query of a set with positions.

    ``usable_db`` marks database images that decoded (a broken file is never a positive or a
    negative). Both lists exclude the query's own file and its own time stamp.
    """

    def __init__(self, ps: PlaceSet, usable_db: np.ndarray | None = None) -> None:
        if not ps.has_positions:
            raise DatasetError(
                f"{ps.name}: training needs positions: photos with GPS, a dbStruct, or "
                "--frame-spacing-m for an image sequence"
            )
        self.ps = ps
        self.num_db = ps.num_db
        self.usable_db = (
            np.ones(ps.num_db, dtype=bool) if usable_db is None else np.asarray(usable_db, bool)
        )
        tree = cKDTree(ps.db_pos) if ps.num_db else None
        self.positives: list[np.ndarray] = []
        self.non_negatives: list[np.ndarray] = []  # everything within the negative radius
        for q in range(ps.num_queries):
            if tree is None:
                self.positives.append(np.zeros(0, np.int64))
                self.non_negatives.append(np.zeros(0, np.int64))
                continue
            near = np.asarray(tree.query_ball_point(ps.q_pos[q], ps.neg_radius_m), dtype=np.int64)
            near.sort()
            d = np.linalg.norm(ps.db_pos[near] - ps.q_pos[q], axis=1) if len(near) else np.zeros(0)
            ok = d <= ps.pos_radius_m
            if ps.trivial_radius_m > 0:
                ok &= d > ps.trivial_radius_m
            pos = np.setdiff1d(near[ok], ps.excluded(q))
            self.positives.append(pos[self.usable_db[pos]])
            self.non_negatives.append(near)

    def trainable(self) -> np.ndarray:
        """Queries with at least one potential positive and at least one negative."""
        has_pos = np.array([len(p) > 0 for p in self.positives], dtype=bool)
        has_neg = np.array(
            [self.usable_db.sum() - self.usable_db[n].sum() > 0 for n in self.non_negatives],
            dtype=bool,
        )
        return np.flatnonzero(has_pos & has_neg)

    def is_negative(self, q: int, db: np.ndarray) -> np.ndarray:
        return ~np.isin(db, self.non_negatives[q]) & self.usable_db[db]

    def sample_negatives(self, q: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``n`` distinct definite negatives drawn uniformly (all of them if fewer)."""
        near = self.non_negatives[q]
        available = int(self.usable_db.sum() - self.usable_db[near].sum())
        if available <= 4 * n:  # few negatives: draw from the explicit list
            mask = self.usable_db.copy()
            mask[near] = False
            negs = np.flatnonzero(mask)
            return negs if len(negs) <= n else np.sort(rng.choice(negs, size=n, replace=False))
        picked = np.zeros(0, dtype=np.int64)
        while len(picked) < n:  # rejection sampling: near points are few compared with the rest
            draw = rng.integers(0, self.num_db, size=int((n - len(picked)) * 1.2) + 8)
            draw = draw[self.is_negative(q, draw)]
            picked = np.union1d(picked, draw)
        return np.sort(rng.choice(picked, size=n, replace=False))


# --- hard-negative mining -------------------------------------------------------------------


@dataclass
class MiningConfig:
    """Relja's nNegChoice, nNegCache, nNegCap and the loss's margin."""

    neg_samples: int = 1000
    neg_cache: int = 10
    neg_per_tuple: int = 10
    margin: float = 0.1
    squared: bool = True  # rank by squared distances (the paper) or plain ones (the ports)


@dataclass
class TrainTuple:
    """One training tuple: query, its best potential positive, hard violating negatives."""

    query: int
    positive: int
    negatives: np.ndarray


def descriptor_distances(a: np.ndarray, b: np.ndarray, squared: bool) -> np.ndarray:
    d = ((b - a[None, :]) ** 2).sum(axis=1, dtype=np.float64)
    return d if squared else np.sqrt(d)


def mine_tuple(
    q: int,
    gt: GroundTruth,
    q_desc: np.ndarray,
    db_desc: np.ndarray,
    neg_cache: np.ndarray,
    rng: np.random.Generator,
    cfg: MiningConfig,
) -> tuple[TrainTuple | None, str]:
    """Mine query ``q`` against the cache; updates ``neg_cache[q]`` (row padded with -1).

    Returns the tuple, or None with the reason: ``"no_positive"``, ``"no_negative"`` or ``"easy"``
    (no negative violates the margin, so the query adds no loss and is skipped, as in the paper).
    """
    positives = gt.positives[q]
    if not len(positives):
        return None, "no_positive"
    d_pos = descriptor_distances(q_desc[q], db_desc[positives], cfg.squared)
    best = int(positives[int(np.argmin(d_pos))])
    cached = neg_cache[q][neg_cache[q] >= 0]
    negs = np.union1d(
        cached[gt.is_negative(q, cached)], gt.sample_negatives(q, cfg.neg_samples, rng)
    )
    if not len(negs):
        return None, "no_negative"
    d_neg = descriptor_distances(q_desc[q], db_desc[negs], cfg.squared)
    order = np.argsort(d_neg, kind="stable")
    negs, d_neg = negs[order], d_neg[order]
    neg_cache[q] = -1
    keep = negs[: neg_cache.shape[1]]
    neg_cache[q, : len(keep)] = keep
    violating = negs[d_neg < float(d_pos.min()) + cfg.margin][: cfg.neg_per_tuple]
    if not len(violating):
        return None, "easy"
    return TrainTuple(q, best, violating), ""


def new_negative_cache(num_queries: int, size: int) -> np.ndarray:
    return np.full((num_queries, max(size, 1)), -1, dtype=np.int64)


# --- descriptors of a whole set (the cache) -------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in a torch.distributed job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world > 1


class Forward(nn.Module):
    """A PlaceModel's forward with the backbone under autocast (given a dtype) and the pooling and
    whitening in float32; ``pooled=True`` stops before whitening (what whitening is fitted on).

    NetVLAD subtracts the soft-assigned centroids from the summed features; in bfloat16 that small
    residual drowns in rounding (descriptors of a trained model collapse), so it never runs in
    reduced precision.
    """

    def __init__(
        self, model: PlaceModel, autocast: torch.dtype | None = None, pooled: bool = False
    ) -> None:
        super().__init__()
        self.model, self.autocast, self.pooled = model, autocast, pooled

    @property
    def dim(self) -> int:
        return self.model.pool_dim if self.pooled else self.model.dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        model = self.model
        if self.autocast is None or images.device.type != "cuda":
            feats = model.local_features(images)
        else:
            with torch.autocast("cuda", dtype=self.autocast):
                feats = model.local_features(images)
        with torch.autocast("cuda", enabled=False) if feats.is_cuda else contextlib.nullcontext():
            x = model.pool(feats.float())
            if not self.pooled and model.whiten is not None:
                x = model.whiten(x)
        return x


def compute_descriptors(
    model: PlaceModel | Forward,
    paths: Sequence[str | os.PathLike],
    cfg: ExtractConfig,
    *,
    dist: DistInfo | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """(N, dim) float32 descriptors of ``paths`` (NaN rows for unreadable files) and the reasons.

    Under DDP each rank extracts every world-th image and the pieces are all-gathered, so every
    rank ends with the same full cache.
    """
    dist = dist or DistInfo()
    mine = list(range(dist.rank, len(paths), dist.world))
    rows: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for res in extract(
        model,
        [paths[i] for i in mine],
        cfg,
        progress=(lambda d, t: progress(d * dist.world, len(paths))) if progress else None,
    ):
        gi = mine[res.index]
        if res.descriptor is None:
            errors[gi] = res.error
        else:
            rows[gi] = np.asarray(res.descriptor, dtype=np.float32)
    dim = int(model.dim)
    local = np.full((len(mine), dim), np.nan, dtype=np.float32)
    for j, gi in enumerate(mine):
        if gi in rows:
            local[j] = rows[gi]
    if not dist.active:
        return local, errors
    return _gather_rows(local, len(paths), dist), _gather_errors(errors, dist)


AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def amp_dtype(name: str = "auto") -> torch.dtype:
    """``auto``: bfloat16 where the GPU has it (no loss scaling needed), else float16."""
    if name in AMP_DTYPES:
        return AMP_DTYPES[name]
    if name != "auto":
        raise ValueError(f"amp dtype must be auto, bfloat16 or float16, got {name!r}")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _gather_rows(local: np.ndarray, total: int, dist: DistInfo) -> np.ndarray:
    import torch.distributed as tdist

    per_rank = -(-total // dist.world)
    padded = np.full((per_rank, local.shape[1]), np.nan, dtype=np.float32)
    padded[: len(local)] = local
    device = dist.device or torch.device("cpu")
    mine = torch.from_numpy(padded).to(device)
    parts = [torch.empty_like(mine) for _ in range(dist.world)]
    tdist.all_gather(parts, mine)
    out = np.full((total, local.shape[1]), np.nan, dtype=np.float32)
    for r, part in enumerate(parts):
        idx = np.arange(r, total, dist.world)
        out[idx] = part.cpu().numpy()[: len(idx)]
    return out


def _gather_errors(errors: dict[int, str], dist: DistInfo) -> dict[int, str]:
    import torch.distributed as tdist

    parts: list[dict[int, str] | None] = [None] * dist.world
    tdist.all_gather_object(parts, errors)
    merged: dict[int, str] = {}
    for part in parts:
        merged.update(part or {})
    return merged


def set_descriptors(
    model: PlaceModel,
    ps: PlaceSet,
    cfg: ExtractConfig,
    *,
    dist: DistInfo | None = None,
    progress: ProgressFn | None = None,
    autocast: torch.dtype | None = None,
    pooled: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Database and query descriptors of a set; a query that is a database file is not redone."""
    extra_q = np.flatnonzero(ps.q_same < 0)
    paths = list(ps.db_paths) + [ps.q_paths[i] for i in extra_q]
    desc, errors = compute_descriptors(
        Forward(model, autocast, pooled), paths, cfg, dist=dist, progress=progress
    )
    db = desc[: ps.num_db]
    q = np.empty((ps.num_queries, desc.shape[1]), dtype=np.float32)
    same = ps.q_same >= 0
    q[same] = db[ps.q_same[same]]
    q[extra_q] = desc[ps.num_db :]
    reasons = {str(paths[i]): r for i, r in errors.items()}
    return db, q, reasons
