"""A training or evaluation set: database and query photos, with positions in metres or index
ground truth, and what says which database images are correct for a query.

Torch-free and loader-free: datasets.py and dbstruct.py build it from files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import NEGATIVE_RADIUS_M, POSITIVE_RADIUS_M, RECALL_RADIUS_M
from ..errors import DatasetError


@dataclass
class PlaceSet:
    """Database and query images of one split, with what says which database images are correct.

    ``q_same[i]`` is the database index of the very file query ``i`` is (a folder used as its own
    queries, leave-one-out), or -1. Such a pair is never a positive and never a search result, and
    neither is a database image taken at the same time stamp as the query (Tokyo Time Machine).
    """

    name: str
    db_paths: list[Path]
    q_paths: list[Path]
    db_pos: np.ndarray | None = None  # (N, d) metres
    q_pos: np.ndarray | None = None  # (Q, d) metres
    q_gt: list[np.ndarray] | None = None  # index ground truth: correct database indices per query
    db_time: np.ndarray | None = None
    q_time: np.ndarray | None = None
    q_same: np.ndarray | None = None
    pos_radius_m: float = POSITIVE_RADIUS_M
    neg_radius_m: float = NEGATIVE_RADIUS_M
    recall_radius_m: float = RECALL_RADIUS_M
    trivial_radius_m: float = 0.0  # positives must lie farther than this (Relja: 1 m, dbStruct)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # What a user calls the photos (a folder's name); ``name`` adds the split ("lund/train").
    label: str = ""
    # Per query: 0 for the photo as it is, N for its N-th photometric variant (augment.py)
    q_variant: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.db_paths = [Path(p) for p in self.db_paths]
        self.q_paths = [Path(p) for p in self.q_paths]
        if self.q_same is None:
            self.q_same = np.full(len(self.q_paths), -1, dtype=np.int64)
        if self.q_variant is None:
            self.q_variant = np.zeros(len(self.q_paths), dtype=np.int64)
        for attr, n in (("db_pos", self.num_db), ("q_pos", self.num_queries)):
            value = getattr(self, attr)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                value = value[:, None] if value.ndim == 1 else value
                if value.ndim != 2 or value.shape[0] != n:
                    raise DatasetError(f"{attr} has shape {value.shape}, expected ({n}, d)")
                setattr(self, attr, value)

    @property
    def source(self) -> str:
        """The photos' own name for messages: no internal split names such as "…/train"."""
        return self.label or self.name

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_queries(self) -> int:
        return len(self.q_paths)

    @property
    def has_positions(self) -> bool:
        return self.db_pos is not None and self.q_pos is not None

    @property
    def queries_are_db(self) -> bool:
        return self.num_queries > 0 and bool((self.q_same >= 0).all())

    def excluded(self, q: int) -> np.ndarray:
        """Database indices that query ``q`` may never match: itself, and its own time stamp."""
        out = [int(self.q_same[q])] if self.q_same[q] >= 0 else []
        if self.db_time is not None and self.q_time is not None:
            out.extend(np.flatnonzero(self.db_time == self.q_time[q]).tolist())
        return np.unique(np.asarray(out, dtype=np.int64))

    def subset(self, db_idx: Sequence[int], q_idx: Sequence[int], name: str) -> PlaceSet:
        """The images at these indices, with ground truth and identities renumbered."""
        db_idx = np.asarray(db_idx, dtype=np.int64)
        q_idx = np.asarray(q_idx, dtype=np.int64)
        remap = np.full(self.num_db, -1, dtype=np.int64)
        remap[db_idx] = np.arange(len(db_idx))
        q_gt = None
        if self.q_gt is not None:
            q_gt = [remap[g][remap[g] >= 0] for g in (self.q_gt[i] for i in q_idx)]
        same = self.q_same[q_idx]
        same = np.where(same >= 0, remap[np.maximum(same, 0)], -1)
        return dataclasses.replace(
            self,
            name=name,
            label=self.source,
            db_paths=[self.db_paths[i] for i in db_idx],
            q_paths=[self.q_paths[i] for i in q_idx],
            db_pos=None if self.db_pos is None else self.db_pos[db_idx],
            q_pos=None if self.q_pos is None else self.q_pos[q_idx],
            q_gt=q_gt,
            db_time=None if self.db_time is None else self.db_time[db_idx],
            q_time=None if self.q_time is None else self.q_time[q_idx],
            q_same=same,
            q_variant=self.q_variant[q_idx],
            skipped=list(self.skipped),
        )

    def with_variants(self, variants: int) -> PlaceSet:
        """This set plus ``variants`` photometric variants of each database photo as queries,
        at the photo's position (the photo itself is then a positive, not the query's own file).
        """
        if variants <= 0 or not self.has_positions:
            return self
        n = self.num_db
        extra = np.repeat(np.arange(1, variants + 1), n)
        return dataclasses.replace(
            self,
            q_paths=self.q_paths + self.db_paths * variants,
            q_pos=np.concatenate([self.q_pos, np.tile(self.db_pos, (variants, 1))]),
            q_time=None
            if self.q_time is None
            else np.concatenate([self.q_time, np.full(n * variants, np.nan)]),
            q_same=np.concatenate([self.q_same, np.full(n * variants, -1, dtype=np.int64)]),
            q_variant=np.concatenate([self.q_variant, extra]),
            q_gt=None
            if self.q_gt is None
            else self.q_gt + [np.zeros(0, np.int64)] * (n * variants),
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "database": self.num_db,
            "queries": self.num_queries,
            "truth": "index" if self.q_gt is not None else "position",
            "skipped": len(self.skipped),
        }
