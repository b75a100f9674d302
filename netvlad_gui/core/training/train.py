"""Weakly supervised NetVLAD training (Arandjelović et al., CVPR 2016, sec. 4), as Relja/netvlad's
``trainWeakly.m`` does it.

Per epoch the training queries are visited in a seeded random order, ``batch_size`` tuples per SGD
step. Before every ``cache_refresh_queries`` queries the descriptor cache (all training database
and query images) is recomputed, and the tuples of those queries are mined from it
(:mod:`netvlad_gui.core.training.mining`): the best potential positive (within 10 m, nearest in descriptor
space) and up to 10 of ~1000 sampled negatives (beyond 25 m) plus the 10 cached hardest ones that
violate the margin. Queries with no potential positive, and queries whose negatives all satisfy
the margin, are skipped and counted. The loss is the paper's triplet ranking loss

    L = sum_j max(min_i d²(q, p_i) + m − d²(q, n_j), 0),   m = 0.1,

on squared Euclidean distances of the L2-normalised descriptors. As in ``trainWeakly.m`` the
gradient of a step is the sum over its tuples divided by the number of violating (q, n_j) pairs.
``loss="unsquared"`` is the PyTorch ports' variant (``nn.TripletMarginLoss``: plain distances,
margin √0.1). On unit vectors d² = 2 − 2cos, so the squared hinge asks d_n − d_p > m / (d_n + d_p):
an effective margin that shrinks as descriptors spread (0.1/2.8 ≈ 0.036 for far-apart pairs), while
the unsquared one asks a fixed 0.316 in distance, i.e. many more violations and larger gradients
for the same m.

By default only the last conv block of the backbone (VGG16 conv5_x, AlexNet conv5, MobileNetV2's
last block, ResNet layer4) and the NetVLAD centroids and assignment weights are trained; the
assignment bias stays at 0 as in Relja's ``layerVLAD``. The model stays in eval mode: batch-norm
statistics are frozen (tuples are small, correlated batches). SGD lr 1e-4, momentum 0.9, weight
decay 1e-3, lr halved every 5 epochs. An untrained NetVLAD gets the k-means + alpha initialisation
from the training database once, before the first epoch (kept in ``init.pt``).

Run folder: ``init.pt`` (the k-means initialised model), ``last.pt`` (every epoch; its
``extra["train_state"]`` holds optimizer, scheduler, scaler, hard-negative cache, history, RNG
states and the config, all plain types and tensors that load with ``weights_only=True``),
``best.pt`` (best validation Recall@5; ties go to Recall@1, then to the earlier epoch),
``epoch_NNN.pt`` (with ``keep_epoch_checkpoints``) and, at the end, ``model.pt``: the best (else
the last) weights with PCA-whitening fitted on the training database (4096-D; only with more
images than dimensions, else none). Without a validation set there is no ``best.pt``. ``resume`` continues after the last
finished epoch exactly as an uninterrupted run would: the per-epoch order and negative sampling
derive from (seed, epoch, query), and the descriptor cache is rebuilt at the start.

Under ``torchrun --nproc_per_node=N`` (NCCL on GPUs, gloo on CPU) the model is wrapped in
DistributedDataParallel. Every rank computes a share of the descriptor cache and all-gathers it,
mines the same tuples from the shared cache, and trains on its own slice of each step (DDP averages
the gradients; the loss is scaled so the step matches one process's). Only rank 0 writes files,
and ``model.pt`` is an ordinary checkpoint.

Progress (``progress`` callback; ``netvlad train --json-progress`` prints one JSON object per line
on stdout, flushed). Every object has ``"event"``; the fields per event are stable. ``init`` and
``cache`` events of the set-up come before ``start``, which is sent once the first descriptor cache
says how many queries can train:

- ``{"event": "start", "run_dir", "device", "world_size", "epochs", "start_epoch", "train": {name,
  database, queries, truth, skipped}, "val": {...} | null, "trainable_queries", "no_positive"}``
- ``{"event": "init", "images", "descriptors", "alpha"}`` once, when NetVLAD is initialised
- ``{"event": "cache", "epoch", "done", "total"}`` while descriptors are (re)computed
- ``{"event": "step", "epoch", "step", "steps", "loss", "lr", "tuples", "violations"}``;
  ``epoch`` counts from 1, ``step`` from 1 to ``steps`` within the epoch (a step whose queries
  all mined no tuple is not sent, so numbers may jump), ``loss`` is the mean per-tuple loss of
  the step, ``tuples`` and ``violations`` count its tuples and violating (q, n) pairs
- ``{"event": "val", "epoch", "recall@1", "recall@5", "recall@10", "recall@20", "queries",
  "best"}`` after each validation (recalls are fractions in [0, 1])
- ``{"event": "epoch", "epoch", "epochs", "loss", "lr", "seconds", "tuples", "skipped":
  {"no_positive", "no_negative", "easy"}, "checkpoint", "all_easy"}`` after each epoch: queries
  without a potential positive or without a negative, and queries whose negatives all met the
  margin; ``all_easy``: no tuple at all because every mined query was easy (no step, no update;
  ``loss`` 0 then measures nothing)
- ``{"event": "whitening", "dim", "images"}``, or ``{"event": "whitening_skipped", "dim",
  "images", "message"}`` with too few images for ``dim``; and finally ``{"event": "done", "model",
  "best_epoch", "recall@5", "epochs"}``
- the CLI adds ``{"event": "error", "message"}`` when training stops on an error.

A run that cannot train stops with a ``TrainError`` saying what the photos lack: before the model
is built when no query has a positive and a negative by position, and at the end, without
``model.pt``, when no epoch found a single tuple (every query easy).

The loop is here; its parts: ``TrainConfig`` (config.py), the run's sets, model and trainable
weights (trainsetup.py), tuples (mining.py), their images (steps.py), the loss (loss.py), the
descriptor cache (descriptors.py), DDP and random state (trainenv.py), file names (runs.py).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import LOSSES, RESUMABLE_OVERRIDES, TRAIN_LAYERS, TrainConfig
from ..errors import TrainConfigError, TrainError
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.features import Forward, resolve_device
from ..model.initialise import initialise_from_images
from ..model.network import PlaceModel, fit_whitening
from .datasets import PlaceSet
from .descriptors import compute_descriptors, set_descriptors
from .evaluate import RECALL_NS, evaluate_descriptors
from .loss import triplet_loss, triplet_terms
from .mining import GroundTruth, TrainTuple, mine_tuple, new_negative_cache
from .runs import BEST, FINAL, INIT, LAST
from .steps import GroupsForward, Step, load_steps
from .trainenv import (
    DistInfo,
    all_reduce_sum,
    amp_dtype,
    barrier,
    end_distributed,
    seed_everything,
    setup_distributed,
)
from .trainsetup import (
    RunProgress,
    fresh_model,
    load_sets,
    read_train_state,
    resume_config,
    set_trainable,
    strip_whitening,
)

log = logging.getLogger(__name__)

# Re-exported: callers (the CLI, tests) import the training API from here.
__all__ = [
    "BEST",
    "FINAL",
    "INIT",
    "LAST",
    "LOSSES",
    "RESUMABLE_OVERRIDES",
    "TRAIN_LAYERS",
    "TrainConfig",
    "TrainConfigError",
    "TrainError",
    "TrainResult",
    "read_train_state",
    "resume_config",
    "set_trainable",
    "train",
    "triplet_loss",
    "triplet_terms",
]

ProgressCallback = Callable[[dict], None]


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    best_epoch: int | None
    best_recall5: float | None
    history: list[dict]


# --- the trainer ----------------------------------------------------------------------------


class _Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        dist: DistInfo,
        resume: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.cfg, self.run_dir, self.dist, self.resume = cfg, run_dir, dist, resume
        self.rank0 = dist.rank == 0
        self._progress = progress
        self.device = dist.device or resolve_device(cfg.extract.device)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = amp_dtype(cfg.amp_dtype) if self.use_amp else None
        self.ecfg = cfg.extract_config()
        self.mcfg = cfg.mining

    def emit(self, event: str, **fields) -> None:
        if self._progress is not None and self.rank0:
            self._progress({"event": event, **fields})

    # -- set-up --

    def _model(self) -> tuple[PlaceModel, dict[str, Any] | None]:
        last = self.run_dir / LAST
        if self.resume and last.is_file():
            _, state = read_train_state(self.run_dir)
            model = strip_whitening(load_checkpoint(last))
            model.extra = {}
            return model.to(self.device), state
        if self.resume and (self.run_dir / INIT).is_file():
            return strip_whitening(load_checkpoint(self.run_dir / INIT)).to(self.device), None
        if self.resume:
            raise TrainError(f"{self.run_dir}: nothing to resume (no {LAST} or {INIT})")
        return fresh_model(self.cfg).to(self.device), None

    def _initialise(self, model: PlaceModel, train: PlaceSet) -> None:
        """k-means + alpha from the training database, once; other ranks load rank 0's result."""
        if model.is_initialised:
            return
        if self.rank0:
            alpha = initialise_from_images(model, train.db_paths, self.cfg.init, self.ecfg)
            save_checkpoint(model, self.run_dir / INIT)
            info = model.meta.get("init", {})
            self.emit(
                "init",
                images=info.get("images"),
                descriptors=info.get("descriptors"),
                alpha=float(alpha),
            )
        barrier(self.dist)
        if not self.rank0:
            initialised = load_checkpoint(self.run_dir / INIT)
            model.load_state_dict(initialised.state_dict())
            model.meta = initialised.meta

    def _cache(self, model: PlaceModel, ps: PlaceSet, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        last = [-1]

        def progress(done: int, total: int) -> None:
            done = min(done, total)
            if done != last[0]:
                last[0] = done
                self.emit("cache", epoch=epoch + 1, done=done, total=total)

        db, q, errors = set_descriptors(
            model, ps, self.ecfg, dist=self.dist, progress=progress, autocast=self.amp_dtype
        )
        if self.rank0:
            for path, reason in list(errors.items())[:20]:
                log.warning("%s: %s", path, reason)
        return db, q

    # -- one step --

    def _step(
        self, forward: nn.Module, tuples: list[TrainTuple], images: dict, run: RunProgress
    ) -> tuple[float, int, int]:
        """Forward, loss, backward and update; returns (loss sum, violations, tuples) over ranks."""
        device = self.device
        if tuples:
            keys = list(images)
            where = {k: i for i, k in enumerate(keys)}
            shapes: dict[tuple, list[int]] = {}
            for i, k in enumerate(keys):
                shapes.setdefault(tuple(images[k].shape), []).append(i)
            groups = [
                torch.stack([images[keys[i]] for i in idx]).to(device, non_blocking=True)
                for idx in shapes.values()
            ]
            order = [i for idx in shapes.values() for i in idx]
        else:  # nothing for this rank this step, but DDP needs every rank's forward/backward
            groups, order = [torch.zeros(1, 3, 64, 64, device=device)], [0]
        outs = forward(groups)  # mixed precision inside (backbone only), see model_forward
        flat = torch.cat([o.float() for o in outs])
        desc = flat[torch.argsort(torch.as_tensor(order, device=flat.device))]
        if tuples:
            m = max(len(t.negatives) for t in tuples)
            qi = torch.as_tensor([where[("q", t.query)] for t in tuples], device=desc.device)
            pi = torch.as_tensor([where[("db", t.positive)] for t in tuples], device=desc.device)
            ni = torch.zeros(len(tuples), m, dtype=torch.long)
            mask = torch.zeros(len(tuples), m, dtype=torch.bool)
            for r, t in enumerate(tuples):
                ni[r, : len(t.negatives)] = torch.as_tensor(
                    [where[("db", int(n))] for n in t.negatives]
                )
                mask[r, : len(t.negatives)] = True
            ni, mask = ni.to(desc.device), mask.to(desc.device)
            terms = triplet_terms(
                desc[qi],
                desc[pi][:, None, :],
                desc[ni],
                margin=self.mcfg.effective_margin,
                squared=self.mcfg.squared,
                neg_mask=mask,
            )
            local_sum, local_viol = terms.sum(), int((terms > 0).sum())
        else:
            local_sum, local_viol = desc.sum() * 0.0, 0
        total_sum, total_viol, total_tuples = all_reduce_sum(
            [float(local_sum.detach()), float(local_viol), float(len(tuples))], self.dist
        )
        # Relja's update: the step's summed gradient over its number of violating pairs. DDP
        # averages over ranks, hence the world factor.
        loss = local_sum * (self.dist.world / max(total_viol, 1.0))
        scaler = run.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if total_viol > 0:  # as trainWeakly.m: no violation, no update (not even weight decay)
            if scaler is not None:
                scaler.step(run.optimizer)
                scaler.update()
            else:
                run.optimizer.step()
            run.stale = True
        run.optimizer.zero_grad(set_to_none=True)
        return total_sum, int(total_viol), int(total_tuples)

    # -- the run --

    def _optimiser(self, model: PlaceModel, state: dict | None) -> RunProgress:
        """Optimizer, schedule, loss scaler and hard-negative cache, restored on resume."""
        cfg = self.cfg
        params = set_trainable(model, cfg.train_layers, cfg.train_assignment_bias)
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        run = RunProgress(
            optimizer=opt,
            scheduler=torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step_epochs, cfg.lr_gamma),
            scaler=torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None,
            neg_cache=new_negative_cache(len(self.train.q_paths), cfg.mining.neg_cache),
        )
        if state is not None:
            run.restore(state)
        return run

    def run(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        cfg.check()
        if self.rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.train, self.val = load_sets(cfg)
        train = self.train
        if not train.num_db or not train.num_queries:
            raise TrainError(f"{train.name}: the training split has no database or no queries")
        # Positions alone decide whether any query can make a tuple: refuse before the model
        # is built and initialised, and say what the photos lack.
        why = GroundTruth(train).why_untrainable()
        if why:
            raise TrainError(why)
        model, state = self._model()
        self._initialise(model, train)
        run = self._optimiser(model, state)
        model.eval()  # frozen batch-norm statistics, no dropout; gradients still flow
        forward: nn.Module = GroupsForward(model, self.amp_dtype)
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(
                forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # nothing updates buffers: the model stays in eval mode
            )
        run.db_desc, run.q_desc = self._cache(model, train, run.epoch)
        gt = GroundTruth(train, np.isfinite(run.db_desc).all(axis=1))
        trainable = np.array(
            [q for q in gt.trainable() if np.isfinite(run.q_desc[q]).all()], dtype=np.int64
        )
        no_pos = sum(1 for p in gt.positives if not len(p))
        # Queries that can never make a tuple, counted in every epoch's "skipped".
        self.untrainable = Counter(
            no_positive=no_pos, no_negative=train.num_queries - no_pos - len(trainable)
        )
        self.emit(
            "start",
            run_dir=str(self.run_dir),
            device=str(self.device),
            world_size=dist.world,
            epochs=cfg.epochs,
            start_epoch=run.epoch + 1,
            train=train.describe(),
            val=self.val.describe() if self.val else None,
            trainable_queries=len(trainable),
            no_positive=no_pos,
        )
        if not len(trainable):  # positions allowed it: the photos that would do are unreadable
            bad_db = int((~gt.usable_db).sum())
            bad_q = int((~np.isfinite(run.q_desc).all(axis=1)).sum())
            raise TrainError(
                f"{train.name}: no training query can train with the readable photos ({bad_db} "
                f"of {train.num_db} database photos and {bad_q} queries are unreadable, see the "
                "warnings); replace or remove the unreadable files"
            )
        while run.epoch < cfg.epochs:
            self._epoch(model, forward, run, gt, trainable)
        if not any(r.get("tuples") for r in run.history):
            raise TrainError(
                f"{train.name}: nothing trained: in all {len(run.history)} epochs every query's "
                "negatives were already farther than its positive by the margin, so no model.pt "
                "was written; add photos of more places, or of the same places at other times"
            )
        model_path = self._finish(model, run)
        return TrainResult(self.run_dir, model_path, run.best_epoch, run.best_r5, run.history)

    def _epoch(self, model, forward, run: RunProgress, gt: GroundTruth, trainable) -> None:
        """One pass over the training queries, then validation and checkpoints."""
        cfg, epoch, t0 = self.cfg, run.epoch, time.monotonic()
        lr = run.optimizer.param_groups[0]["lr"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(trainable)
        per_step = cfg.batch_size * self.dist.world
        seg = max(1, math.ceil(cfg.mining.cache_refresh_queries / per_step)) * per_step
        steps_total = math.ceil(len(order) / per_step)
        skipped = Counter(self.untrainable)
        loss_sum = tuples_done = 0.0
        for s0 in range(0, len(order), seg):
            if run.stale:  # weights moved since the cache was computed
                run.db_desc, run.q_desc = self._cache(model, self.train, epoch)
                run.stale = False
            steps = self._mine(order[s0 : s0 + seg], s0 // per_step, per_step, gt, run, skipped)
            for step, tuples, images in load_steps(steps, self.train, self.ecfg):
                s, v, n = self._step(forward, tuples, images, run)
                loss_sum, tuples_done = loss_sum + s, tuples_done + n
                self.emit(
                    "step",
                    epoch=epoch + 1,
                    step=step.index + 1,
                    steps=steps_total,
                    loss=s / max(n, 1),
                    lr=lr,
                    tuples=n,
                    violations=v,
                )
        with warnings.catch_warnings():  # an epoch of only easy queries makes no SGD step
            warnings.simplefilter("ignore", UserWarning)
            run.scheduler.step()
        run.epoch += 1
        # No tuple at all while queries were mined: each one's negatives already met the margin.
        # The loss of such an epoch is no measurement; "all_easy" says so.
        all_easy = not tuples_done and skipped["easy"] > 0
        record: dict[str, Any] = {
            "epoch": run.epoch,
            "loss": loss_sum / max(tuples_done, 1),
            "lr": lr,
            "tuples": int(tuples_done),
            "all_easy": all_easy,
        }
        is_best = False
        if self.val is not None:
            db, q = self._cache(model, self.val, epoch)
            rec = evaluate_descriptors(self.val, db, q, RECALL_NS)
            record["recalls"] = {str(k): v for k, v in rec.recalls.items()}
            r5 = rec.recalls.get(5, 0.0)
            r1 = rec.recalls.get(1, 0.0)
            is_best = run.best_r5 is None or (r5, r1) > (run.best_r5, run.best_r1 or 0.0)
            if is_best:
                run.best_r5, run.best_r1, run.best_epoch = r5, r1, run.epoch
            self.emit("val", epoch=run.epoch, **rec.to_json(), best=is_best)
        run.history.append(record)
        path = self._save(model, run, is_best)
        self.emit(
            "epoch",
            epoch=run.epoch,
            epochs=cfg.epochs,
            loss=record["loss"],
            lr=lr,
            seconds=round(time.monotonic() - t0, 3),
            tuples=int(tuples_done),
            all_easy=all_easy,
            skipped={k: int(skipped[k]) for k in ("no_positive", "no_negative", "easy")},
            checkpoint=str(path),
        )

    def _mine(
        self,
        queries,
        first_step: int,
        per_step: int,
        gt: GroundTruth,
        run: RunProgress,
        skipped: Counter,
    ) -> list[Step]:
        """Tuples of ``queries`` from the current cache, grouped into steps.

        Every rank mines every query (same seeds, same cache), so all agree on the hard-negative
        cache and on which steps are empty; each keeps its own slice of each step.
        """
        found: dict[int, TrainTuple] = {}
        for q in map(int, queries):
            rng = np.random.default_rng([self.cfg.seed, run.epoch, q])
            t, why = mine_tuple(q, gt, run.q_desc, run.db_desc, run.neg_cache, rng, self.mcfg)
            if t is None:
                skipped[why] += 1
            else:
                found[q] = t
        steps = []
        b, r = self.cfg.batch_size, self.dist.rank
        for i, g0 in enumerate(range(0, len(queries), per_step)):
            group = [int(q) for q in queries[g0 : g0 + per_step]]
            total = sum(1 for q in group if q in found)
            if total:
                mine = [found[q] for q in group[r * b : (r + 1) * b] if q in found]
                steps.append(Step(first_step + i, mine, total))
        return steps

    def _save(self, model: PlaceModel, run: RunProgress, is_best: bool) -> Path:
        last = self.run_dir / LAST
        if self.rank0:
            state = run.state(self.cfg, self.dist.world)
            summary = {
                "epoch": run.epoch,
                "history": run.history[-1:],
                "config": self.cfg.to_dict(),
            }
            save_checkpoint(model, last, extra={"train_state": state})
            if is_best:
                save_checkpoint(model, self.run_dir / BEST, extra={"training": summary})
            if self.cfg.keep_epoch_checkpoints:
                save_checkpoint(
                    model, self.run_dir / f"epoch_{run.epoch:03d}.pt", extra={"training": summary}
                )
        barrier(self.dist)
        return last

    def _whiten(self, model: PlaceModel) -> dict[str, Any]:
        """PCA-whitening fitted on the training database, only with more images than dimensions.

        Fitted on fewer, the smallest components are noise that whitening blows up (corridor:
        Recall@1 93 -> 75 % whitened to 55-D from 56 images), so the raw descriptor is kept.
        """
        asked = min(int(self.cfg.whitening_dim), model.pool_dim)
        descs = np.zeros((0, model.pool_dim), np.float32)
        if self.train.num_db > asked:
            descs, _ = compute_descriptors(
                Forward(model, self.amp_dtype, pooled=True),
                self.train.db_paths,
                self.ecfg,
                dist=self.dist,
            )
            descs = descs[np.isfinite(descs).all(axis=1)]
        n = len(descs) if len(descs) else self.train.num_db
        if len(descs) > asked:
            fit_whitening(model, descs, asked)
            self.emit("whitening", dim=model.config.whitening_dim, images=n)
            return {"dim": model.config.whitening_dim, "images": n}
        message = (
            f"no PCA-whitening: {asked} dimensions need more than {asked} readable training "
            f"images, there are {n}; model.pt keeps the {model.pool_dim}-D descriptor "
            f"(--whitening-dim below {n} whitens anyway)"
        )
        log.warning(message)
        self.emit("whitening_skipped", dim=asked, images=n, message=message)
        return {"dim": None, "images": n, "skipped": message}

    def _finish(self, model: PlaceModel, run: RunProgress) -> Path:
        """Best (else last) weights + PCA-whitening fitted on the training database -> model.pt."""
        best = self.run_dir / BEST
        if run.best_epoch is not None and best.is_file():
            model.load_state_dict(load_checkpoint(best).state_dict())
        for p in model.parameters():
            p.requires_grad_(False)
        whitening = self._whiten(model) if self.cfg.whitening_dim else None
        model.meta["training"] = {
            "epochs": len(run.history),
            "best_epoch": run.best_epoch,
            "best_recall5": run.best_r5,
            "data": self.cfg.data.describe(),
            "train_images": self.train.num_db,
            "history": run.history,
            "whitening": whitening,
        }
        path = self.run_dir / FINAL
        if self.rank0:
            save_checkpoint(model, path, extra={"training": {"config": self.cfg.to_dict()}})
        barrier(self.dist)
        self.emit(
            "done",
            model=str(path),
            best_epoch=run.best_epoch,
            **{"recall@5": run.best_r5},
            epochs=len(run.history),
        )
        return path


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) a run in ``run_dir``; see the module doc."""
    run_dir = Path(run_dir).expanduser()
    if not resume and (run_dir / LAST).is_file():
        raise TrainError(f"{run_dir} already holds a training run; use --resume or another --out")
    dist, created = setup_distributed(cfg.extract.device)
    try:
        return _Trainer(cfg, run_dir, dist, resume, progress).run()
    except torch.cuda.OutOfMemoryError:
        last = run_dir / LAST
        kept = (
            f"the last checkpoint {last} is intact: continue with --resume"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise TrainError(
            f"CUDA out of memory with {cfg.batch_size} tuples of up to {2 + cfg.mining.neg_per_tuple} "
            f"images at {cfg.extract.image_size} px per step: try --batch-size "
            f"{max(1, cfg.batch_size // 2)} (or a smaller --image-size or --neg-per-tuple); {kept}"
        ) from None
    finally:
        if created:
            end_distributed()
