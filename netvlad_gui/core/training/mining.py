"""Weak supervision from positions: potential positives, definite negatives, hard-negative mining.

The paper (Arandjelović et al. 2016, sec. 4) and its code (Relja/netvlad ``trainWeakly.m``):

- potential positives of a query lie within 10 m (and, for dbStruct sets, farther than 1 m: the
  same panorama is trivial); the best one is the nearest in descriptor space;
- definite negatives lie beyond 25 m;
- per query, ~1000 random negatives plus the 10 hardest from the previous visit are ranked in the
  descriptor cache, and up to 10 of those that violate the margin make the training tuple;
- the cache holds descriptors of every training image and is refreshed every N queries
  (computed by :mod:`netvlad_gui.core.training.descriptors`).

The numbers (nNegChoice, nNegCache, nNegCap, the margin) are :class:`MiningConfig`'s, in config.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..errors import DatasetError
from ..trainconfig import MiningConfig
from .datasets import PlaceSet

log = logging.getLogger(__name__)

__all__ = [
    "GroundTruth",
    "MiningConfig",
    "TrainTuple",
    "descriptor_distances",
    "mine_tuple",
    "new_negative_cache",
]


# --- who is a positive, who is a negative ---------------------------------------------------


class GroundTruth:
    """Potential positives and definite negatives of each query of a set with positions.

    ``usable_db`` marks database images that decoded (a broken file is never a positive or a
    negative). Both lists exclude the query's own file and its own time stamp.
    """

    def __init__(self, ps: PlaceSet, usable_db: np.ndarray | None = None) -> None:
        if not ps.has_positions:
            raise DatasetError(
                f"{ps.source}: training needs positions: photos with GPS, a dbStruct, or "
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

    def why_untrainable(self) -> str:
        """One line on why no query can train, and what photos would let it ("" when some can)."""
        if len(self.trainable()):
            return ""
        ps = self.ps
        head = (
            f"{ps.source}: no training query has a potential positive within "
            f"{ps.pos_radius_m:g} m and a negative beyond {ps.neg_radius_m:g} m"
        )
        has_pos = [q for q, p in enumerate(self.positives) if len(p)]
        if not ps.num_db or not ps.num_queries:
            return f"{head}: it has {ps.num_db} database photos and {ps.num_queries} queries"
        if has_pos:  # the places repeat, but nothing lies far enough away
            return (
                f"{head}: all {len(has_pos)} queries with a positive lie within "
                f"{ps.neg_radius_m:g} m of every photo; add photos of places farther away"
            )
        repeated, places = self._places()
        return (
            f"{head}: none of its {ps.num_queries} queries has another photo within "
            f"{ps.pos_radius_m:g} m ({repeated} of {places} places have two or more photos); "
            f"photograph places two or more times, within {ps.pos_radius_m:g} m of each other"
        )

    def _places(self) -> tuple[int, int]:
        """(places with two or more database photos, places): photos linked within pos_radius_m."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.num_db
        pairs = cKDTree(self.ps.db_pos).query_pairs(self.ps.pos_radius_m, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        count, labels = connected_components(graph, directed=False)
        return int((np.bincount(labels) >= 2).sum()), int(count)

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
    violating = negs[d_neg < float(d_pos.min()) + cfg.effective_margin][: cfg.neg_per_tuple]
    if not len(violating):
        return None, "easy"
    return TrainTuple(q, best, violating), ""


def new_negative_cache(num_queries: int, size: int) -> np.ndarray:
    return np.full((num_queries, max(size, 1)), -1, dtype=np.int64)
