"""The build's last stage: how similar same-place and different-place references are (what
locate's confidence is read against), and whether that needs computing again at all."""

from __future__ import annotations

import json

import numpy as np

from ..config import NEGATIVE_RADIUS_M
from ..photos import geo
from .catalog import INDEXED
from .index import INDEX_CONFIG_KEY, MODEL_SHA_KEY, LibraryIndex
from .scan import SIDECAR_STAMP_KEY
from .searchindex import META_KEY as SEARCH_META_KEY

FINALIZED_KEY = "finalized_from"  # finalized_stamp when calibration and search were last made


def finalized_stamp(index: LibraryIndex) -> str:
    """What the calibration and the saved search index were made from: while it stays the same
    (a run that found nothing new), finalising again would compute the same thing (2 s of a
    no-op run on 2 000 photos)."""
    c = index.catalog.counts()
    meta = index.catalog.get_meta
    return json.dumps(
        [
            meta("store_rows"),
            index.store_path.name,
            c[INDEXED],
            c["with_gps"],
            index.catalog.live_rows(),
            meta(SIDECAR_STAMP_KEY),
            meta(INDEX_CONFIG_KEY),
            meta(SEARCH_META_KEY),
            meta(MODEL_SHA_KEY),
        ]
    )


def calibrate(index: LibraryIndex, max_refs: int = 2000, seed: int = 0) -> dict[str, float]:
    """Similarity of same-place and different-place reference pairs, for locate's confidence."""
    rows = index.reference_points()
    if len(rows) < 2:
        return {}
    rng = np.random.default_rng(seed)
    if len(rows) > max_refs:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), max_refs, replace=False))]
    vecs = index.store().read([r.row for r in rows])
    sims = vecs @ vecs.T
    lat = np.array([r.lat for r in rows])
    lon = np.array([r.lon for r in rows])
    dist = geo.haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    off_diag = ~np.eye(len(rows), dtype=bool)
    same = sims[off_diag & (dist <= NEGATIVE_RADIUS_M)]
    diff = sims[off_diag & (dist > NEGATIVE_RADIUS_M)]
    out: dict[str, float] = {}
    if len(diff):
        out["neg_median"] = float(np.median(diff))
        out["neg_p99"] = float(np.quantile(diff, 0.99))
        # A query from elsewhere is compared with many references; its best score is the top
        # of that many draws, so the per-row maximum is the honest "no match" level.
        masked = np.where(off_diag & (dist > NEGATIVE_RADIUS_M), sims, -np.inf).max(1)
        out["neg_best_median"] = float(np.median(masked[np.isfinite(masked)]))
    if len(same):
        out["pos_median"] = float(np.median(same))
        masked = np.where(off_diag & (dist <= NEGATIVE_RADIUS_M), sims, -np.inf).max(1)
        out["pos_best_median"] = float(np.median(masked[np.isfinite(masked)]))
    out["pairs_same"] = int(len(same) // 2)
    out["pairs_diff"] = int(len(diff) // 2)
    return out
