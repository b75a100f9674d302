"""The end of each epoch and of the run: checkpoints, PCA-whitening, ``model.pt`` and the figure
a user decides by: Recall@N on the held-out places, before and after training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.network import PlaceModel, fit_whitening
from ..trainconfig import TrainConfig
from .evaluate import RECALL_NS, EvalResult, evaluate_descriptors
from .frozen import FrozenStore, Key, Tail, describe
from .placeset import PlaceSet
from .runs import BEST, FINAL, LAST
from .trainenv import DistInfo, barrier
from .trainsetup import RunProgress

log = logging.getLogger(__name__)


def set_keys(ps: PlaceSet) -> tuple[list[Key], list[Key]]:
    """The store keys of a set's database and query photos (queries may be variants)."""
    q = [(str(p), int(v)) for p, v in zip(ps.q_paths, ps.q_variant, strict=True)]
    return [(str(p), 0) for p in ps.db_paths], q


def set_descriptors(
    tail: Tail, store: FrozenStore, ps: PlaceSet, batch_size: int, dist: DistInfo
) -> tuple[np.ndarray, np.ndarray]:
    """Database and query descriptors of a set from the store; a query that is a database file
    is not described twice. Unreadable photos get NaN rows."""
    db_keys, q_keys = set_keys(ps)
    extra = np.flatnonzero(ps.q_same < 0)
    desc = describe(tail, store, db_keys + [q_keys[i] for i in extra], batch_size, dist)
    db = desc[: ps.num_db]
    q = np.empty((ps.num_queries, desc.shape[1]), dtype=np.float32)
    same = ps.q_same >= 0
    q[same] = db[ps.q_same[same]]
    q[extra] = desc[ps.num_db :]
    return db, q


def heldout_recalls(
    tail: Tail, store: FrozenStore, val: PlaceSet, batch_size: int, dist: DistInfo
) -> EvalResult:
    """Recall@N of the model on the held-out places (the validation set)."""
    db, q = set_descriptors(tail, store, val, batch_size, dist)
    return evaluate_descriptors(val, db, q, RECALL_NS)


def save_epoch(
    model: PlaceModel,
    run: RunProgress,
    cfg: TrainConfig,
    run_dir: Path,
    dist: DistInfo,
    is_best: bool,
) -> Path:
    """``last.pt`` (with the state a resume needs), ``best.pt`` when best, ``epoch_NNN.pt``."""
    last = run_dir / LAST
    if dist.rank == 0:
        state = run.state(cfg, dist.world)
        summary = {"epoch": run.epoch, "history": run.history[-1:], "config": cfg.to_dict()}
        save_checkpoint(model, last, extra={"train_state": state})
        if is_best:
            save_checkpoint(model, run_dir / BEST, extra={"training": summary})
        if cfg.keep_epoch_checkpoints:
            save_checkpoint(
                model, run_dir / f"epoch_{run.epoch:03d}.pt", extra={"training": summary}
            )
    barrier(dist)
    return last


def whiten(
    model: PlaceModel,
    cfg: TrainConfig,
    train: PlaceSet,
    tail: Tail,
    store: FrozenStore,
    dist: DistInfo,
    emit,
) -> dict[str, Any]:
    """PCA-whitening fitted on the training database, only with more images than dimensions.

    Fitted on fewer, the smallest components are noise that whitening blows up (corridor:
    Recall@1 93 -> 75 % whitened to 55-D from 56 images), so the raw descriptor is kept.
    """
    asked = min(int(cfg.whitening_dim), model.pool_dim)
    descs = np.zeros((0, model.pool_dim), np.float32)
    if train.num_db > asked:
        db_keys, _ = set_keys(train)
        descs = describe(tail, store, db_keys, cfg.extract.batch_size, dist)
        descs = descs[np.isfinite(descs).all(axis=1)]
    n = len(descs) if len(descs) else train.num_db
    if len(descs) > asked:
        fit_whitening(model, descs, asked)
        emit("whitening", dim=model.config.whitening_dim, images=n)
        return {"dim": model.config.whitening_dim, "images": n}
    message = (
        f"no PCA-whitening: {asked} dimensions need more than {asked} readable training "
        f"images, there are {n}; model.pt keeps the {model.pool_dim}-D descriptor "
        f"(--whitening-dim below {n} whitens anyway)"
    )
    log.warning(message)
    emit("whitening_skipped", dim=asked, images=n, message=message)
    return {"dim": None, "images": n, "skipped": message}


def final_model(
    model: PlaceModel,
    run: RunProgress,
    cfg: TrainConfig,
    run_dir: Path,
    train: PlaceSet,
    tail: Tail,
    store: FrozenStore,
    dist: DistInfo,
    emit,
) -> Path:
    """Best (else last) weights + PCA-whitening fitted on the training database -> model.pt."""
    best = run_dir / BEST
    if run.best_epoch is not None and best.is_file():
        model.load_state_dict(load_checkpoint(best).state_dict())
    for p in model.parameters():
        p.requires_grad_(False)
    whitening = whiten(model, cfg, train, tail, store, dist, emit) if cfg.whitening_dim else None
    model.meta["training"] = {
        "epochs": len(run.history),
        "best_epoch": run.best_epoch,
        "best_recall5": run.best_r5,
        "data": cfg.data.describe(),
        "train_images": train.num_db,
        "history": run.history,
        "whitening": whitening,
        "heldout": run.heldout,
    }
    path = run_dir / FINAL
    if dist.rank == 0:
        save_checkpoint(model, path, extra={"training": {"config": cfg.to_dict()}})
    barrier(dist)
    return path
