"""Recall@N, the paper's measure (sec. 5.1), and the comparison of f_max, NetVLAD off the shelf and
trained NetVLAD on the same set.

A query counts as correct at N when any of its top-N database images lies within the set's recall
radius (25 m), or is in its ground-truth list for index-based sets. Search is exact (faiss flat L2).
Every query counts, including those with no correct reference in the database (they can never be
right; ``no_positive`` says how many), as in Relja's ``recallAtN``. Unreadable queries are left
out and counted in ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..config import ExtractConfig, InitConfig, ModelConfig, SequenceConfig, VerifyConfig
from ..errors import DatasetError
from ..model.initialise import initialise_from_images
from ..model.network import PlaceModel, build_model
from .datasets import PlaceSet
from .descriptors import ProgressFn, set_descriptors
from .seqeval import SequenceRecall, check_sequence_set, sequence_ranking
from .trainenv import DistInfo

if TYPE_CHECKING:
    from ..query.verify import Verifier

log = logging.getLogger(__name__)

RECALL_NS = (1, 5, 10, 20)


@dataclass
class EvalResult:
    recalls: dict[int, float]  # N -> fraction of queries in [0, 1]
    queries: int
    no_positive: int = 0
    failed: int = 0
    # Recall@N after geometric re-ranking of each query's top K (``eval --verify``), else None
    verified: dict[int, float] | None = None
    # Recall@N of the queries located in groups of consecutive photos (``eval --sequence``)
    sequence: SequenceRecall | None = None

    def to_json(self) -> dict:
        out: dict = {f"recall@{n}": round(float(r), 6) for n, r in sorted(self.recalls.items())}
        if self.verified is not None:
            out["verified"] = {f"recall@{n}": round(float(r), 6) for n, r in self.verified.items()}
        if self.sequence is not None:  # absent without --sequence, as "verified" without --verify
            out["sequence"] = self.sequence.to_json()
        out["queries"] = self.queries
        if self.no_positive:
            out["no_positive"] = self.no_positive
        if self.failed:
            out["failed"] = self.failed
        return out


def correct_references(ps: PlaceSet) -> list[np.ndarray]:
    """Per query, the database indices that make it correct (ground truth, else the 25 m rule)."""
    if ps.q_gt is not None:
        lists = [np.asarray(g, dtype=np.int64) for g in ps.q_gt]
    elif ps.has_positions:
        if not ps.num_db:
            return [np.zeros(0, np.int64) for _ in range(ps.num_queries)]
        tree = cKDTree(ps.db_pos)
        lists = [
            np.sort(np.asarray(tree.query_ball_point(p, ps.recall_radius_m), dtype=np.int64))
            for p in ps.q_pos
        ]
    else:
        raise DatasetError(f"{ps.name}: no ground truth: needs GPS, --frame-spacing-m or --gt")
    return [np.setdiff1d(g, ps.excluded(q)) for q, g in enumerate(lists)]


def search(
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    k: int,
    excluded: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Exact k-NN (faiss IndexFlatL2): (Q, k) database indices, best first, -1 where fewer.

    ``excluded[q]`` lists database indices query q may not return (itself, its time stamp).
    """
    import faiss

    nq = len(q_desc)
    out = np.full((nq, k), -1, dtype=np.int64)
    if not len(db_desc) or not nq:
        return out
    index = faiss.IndexFlatL2(db_desc.shape[1])
    index.add(np.ascontiguousarray(db_desc, dtype=np.float32))
    extra = max((len(e) for e in excluded), default=0) if excluded is not None else 0
    kk = min(k + extra, len(db_desc))
    _, ids = index.search(np.ascontiguousarray(q_desc, dtype=np.float32), kk)
    for q in range(nq):
        row = ids[q][ids[q] >= 0]
        if extra:
            row = row[~np.isin(row, excluded[q])]
        row = row[:k]
        out[q, : len(row)] = row
    return out


def first_correct_rank(ranked: np.ndarray, correct: Sequence[np.ndarray]) -> np.ndarray:
    """Per query, the 0-based rank of the first correct result (a large number if none)."""
    ranks = np.full(len(ranked), np.iinfo(np.int64).max, dtype=np.int64)
    for q, row in enumerate(ranked):
        hits = np.flatnonzero(np.isin(row, correct[q]) & (row >= 0))
        if len(hits):
            ranks[q] = hits[0]
    return ranks


def recall_at_n(
    ranked: np.ndarray, correct: Sequence[np.ndarray], ns: Sequence[int] = RECALL_NS
) -> dict[int, float]:
    """Fraction of queries with a correct database image among their top N, for each N."""
    if not len(ranked):
        return {int(n): 0.0 for n in ns}
    first = first_correct_rank(ranked, correct)
    return {int(n): float(np.mean(first < n)) for n in ns}


def evaluate_descriptors(
    ps: PlaceSet,
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    ns: Sequence[int] = RECALL_NS,
    verifier: Verifier | None = None,
    sequence: SequenceConfig | None = None,
) -> EvalResult:
    """Recall@N of precomputed descriptors (NaN rows = unreadable images, left out).

    With a ``verifier``, also Recall@N after each query's top K is re-ranked by geometric
    verification (core/query/verify.py), as ``netvlad locate`` ranks its matches. With
    ``sequence``, also Recall@N of the queries located in groups of ``sequence.eval_group``
    consecutive photos (seqeval.py).
    """
    correct = correct_references(ps)
    good_db = np.flatnonzero(np.isfinite(db_desc).all(axis=1))
    good_q = np.flatnonzero(np.isfinite(q_desc).all(axis=1))
    excluded = [ps.excluded(int(q)) for q in good_q]
    # Search only readable database rows, then map back to set indices.
    remap = np.full(ps.num_db, -1, dtype=np.int64)
    remap[good_db] = np.arange(len(good_db))
    ex_local = [remap[e][remap[e] >= 0] for e in excluded]
    k = max(max(ns), sequence.candidates if sequence is not None else 0)
    ranked_local = search(db_desc[good_db], q_desc[good_q], k, ex_local)
    ranked = np.where(ranked_local >= 0, good_db[np.maximum(ranked_local, 0)], -1)
    corr = [correct[int(q)] for q in good_q]
    verified = None
    if verifier is not None:
        from ..query.verify import rerank_ranked

        q_paths = [ps.q_paths[int(q)] for q in good_q]
        verified = recall_at_n(rerank_ranked(verifier, q_paths, ps.db_paths, ranked), corr, ns)
    together = None
    if sequence is not None:
        seq_ranked, decided, changed, order = sequence_ranking(
            ps, db_desc, q_desc, good_db, good_q, ranked, sequence
        )
        together = SequenceRecall(
            sequence.eval_group, recall_at_n(seq_ranked, corr, ns), decided, changed, order
        )
    return EvalResult(
        recalls=recall_at_n(ranked, corr, ns),
        verified=verified,
        sequence=together,
        queries=len(good_q),
        no_positive=int(sum(1 for c in corr if not len(np.intersect1d(c, good_db)))),
        failed=ps.num_queries - len(good_q),
    )


def prepare_model(
    model: PlaceModel,
    ps: PlaceSet,
    extract_cfg: ExtractConfig,
    init_cfg: InitConfig | None = None,
    progress: ProgressFn | None = None,
) -> PlaceModel:
    """An untrained NetVLAD gets its k-means + alpha initialisation from ``ps``'s database."""
    if not model.is_initialised:
        initialise_from_images(
            model, ps.db_paths, init_cfg or InitConfig(), extract_cfg, progress=progress
        )
    return model


def evaluate_model(
    model: PlaceModel,
    ps: PlaceSet,
    extract_cfg: ExtractConfig,
    *,
    ns: Sequence[int] = RECALL_NS,
    init_cfg: InitConfig | None = None,
    dist: DistInfo | None = None,
    progress: ProgressFn | None = None,
    verify: VerifyConfig | None = None,
    sequence: SequenceConfig | None = None,
) -> EvalResult:
    """Recall@N of ``model`` on ``ps``; with ``verify``, after geometric re-ranking too; with
    ``sequence``, of the queries located in groups of consecutive photos too."""
    if sequence is not None:  # before any photo is read: a set that cannot, says so at once
        sequence = sequence.validate()
        check_sequence_set(ps)
    prepare_model(model, ps, extract_cfg, init_cfg)
    db, q, errors = set_descriptors(model, ps, extract_cfg, dist=dist, progress=progress)
    for path, reason in list(errors.items())[:20]:
        log.warning("%s: %s", path, reason)
    verifier = None
    if verify is not None:
        from ..query.verify import Verifier

        verifier = Verifier(model, extract_cfg, verify)
    return evaluate_descriptors(ps, db, q, ns, verifier=verifier, sequence=sequence)


def evaluate_with_and_without_whitening(
    model: PlaceModel,
    ps: PlaceSet,
    extract_cfg: ExtractConfig,
    *,
    ns: Sequence[int] = RECALL_NS,
    progress: ProgressFn | None = None,
) -> tuple[EvalResult, EvalResult | None]:
    """(model as it is, its un-whitened descriptor or None) from one extraction."""
    if model.whiten is None:
        return evaluate_model(model, ps, extract_cfg, ns=ns, progress=progress), None
    db, q, _ = set_descriptors(model, ps, extract_cfg, progress=progress, pooled=True)
    raw = evaluate_descriptors(ps, db, q, ns)
    with torch.inference_mode():
        w = model.whiten.cpu()
        dbw = w(torch.from_numpy(db)).numpy()
        qw = w(torch.from_numpy(q)).numpy()
        model.whiten.to(model.device)
    return evaluate_descriptors(ps, dbw, qw, ns), raw


def baselines(model: PlaceModel, backbone_weights: str | None = None) -> dict[str, PlaceModel]:
    """f_max and off-the-shelf NetVLAD on the same backbone (and K) as ``model``."""
    cfg = model.config
    return {
        "fmax": build_model(ModelConfig(backbone=cfg.backbone, pooling="fmax"), backbone_weights),
        "netvlad-off-the-shelf": build_model(
            ModelConfig(backbone=cfg.backbone, pooling="netvlad", num_clusters=cfg.num_clusters),
            backbone_weights,
        ),
    }


def compare(
    model: PlaceModel,
    ps: PlaceSet,
    extract_cfg: ExtractConfig,
    *,
    backbone_weights: str | None = None,
    ns: Sequence[int] = RECALL_NS,
    init_cfg: InitConfig | None = None,
    progress: Callable | None = None,
) -> dict[str, EvalResult]:
    """Recall@N of f_max, NetVLAD off the shelf (k-means init on this database) and ``model``.

    The baselines use ``model``'s backbone and K with ``backbone_weights`` (None: the shipped
    or torchvision ImageNet weights, which is what training starts from by default).
    ``progress(name, done, total)`` reports each model's extraction. When ``model`` carries
    PCA-whitening, its un-whitened descriptor is reported too (``netvlad-trained-unwhitened``).
    """
    from ..model.features import resolve_device

    device = resolve_device(extract_cfg.device)
    out: dict[str, EvalResult] = {}
    for name, base in baselines(model, backbone_weights).items():
        base = base.to(device)
        cb = (lambda d, t, n=name: progress(n, d, t)) if progress else None
        prepare_model(base, ps, extract_cfg, init_cfg, progress=cb)
        out[name] = evaluate_model(base, ps, extract_cfg, ns=ns, progress=cb)
    trained = "training" in model.meta  # written by core.train
    trained_name = f"{model.config.pooling}-trained" if trained else f"{model.config.name} (model)"
    model = model.to(device)
    cb = (lambda d, t: progress(trained_name, d, t)) if progress else None
    prepare_model(model, ps, extract_cfg, init_cfg, progress=cb)
    full, raw = evaluate_with_and_without_whitening(model, ps, extract_cfg, ns=ns, progress=cb)
    out[trained_name] = full
    if raw is not None:
        out[f"{trained_name}-unwhitened"] = raw
    return out
