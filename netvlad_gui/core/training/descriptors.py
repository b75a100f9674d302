"""Descriptors of a whole set of images, shared out over the ranks of a torchrun job.

Training's descriptor cache (every training database and query image) and evaluation's database
and queries both come from here. Under DDP each rank extracts every world-th image and the pieces
are all-gathered, so every rank ends with the same full array.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..config import ExtractConfig
from ..model.features import Forward, extract
from ..model.network import PlaceModel
from .datasets import PlaceSet
from .trainenv import DistInfo, all_gather_dicts, all_gather_rows

ProgressFn = Callable[[int, int], None]


def compute_descriptors(
    model: PlaceModel | Forward,
    paths: Sequence[str | os.PathLike],
    cfg: ExtractConfig,
    *,
    dist: DistInfo | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """(N, dim) float32 descriptors of ``paths`` (NaN rows for unreadable files) and the reasons."""
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
    return all_gather_rows(local, len(paths), dist), all_gather_dicts(errors, dist)


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
    """Database and query descriptors of a set; a query that is a database file is not redone.

    ``autocast`` runs the backbone in that precision, ``pooled`` stops before whitening (see
    :func:`~netvlad_gui.core.model.features.model_forward`).
    """
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
