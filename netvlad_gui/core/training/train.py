"""Weakly supervised NetVLAD training (Arandjelović et al., CVPR 2016, sec. 4), as Relja/netvlad's
``trainWeakly.m`` does it.

At the start of a run every photo goes once through the layers that do not train, and their output
is kept on disk (frozen.py); everything after that starts from it. Per epoch the training queries
are visited in a seeded random order, ``batch_size`` tuples per SGD step. Before every
``cache_refresh_queries`` queries the descriptor cache (all training database and query images)
is recomputed, and the tuples of those queries are mined from it
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
says how many queries can train; ``heldout`` (before) follows it when there are held-out places:

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
- ``{"event": "heldout", "stage": "before" | "after", "recall@1", "recall@5", "recall@10",
  "recall@20", "queries"}``: Recall@N on the held-out places (the validation set: places the run
  never trains on) of the model the run starts from, and at the end of ``model.pt`` as written
- ``{"event": "nothing_to_learn", "message"}`` when the first epoch's mining finds nothing to
  learn (every query's negatives already far enough): sent at once, then the run stops
- ``{"event": "whitening", "dim", "images"}``, or ``{"event": "whitening_skipped", "dim",
  "images", "message"}`` with too few images for ``dim``; and finally ``{"event": "done", "model",
  "best_epoch", "recall@5", "epochs", "heldout": {"before": {...}, "after": {...}} | {}}``
- the CLI adds ``{"event": "error", "message"}`` when training stops on an error.

A run that cannot train stops with a ``TrainError`` saying, in plain words, what the photos lack:
before the model is built when no query has a positive and a negative by position, and after the
first epoch's mining, without ``model.pt`` (the k-means ``init.pt`` is removed too, so nothing
offers a resume), when the model already tells every place from the others.

The loop is here; its parts: ``TrainConfig`` (config.py), the run's sets, model and trainable
weights (trainsetup.py), the frozen layers' output (frozen.py), photometric variants
(augment.py), tuples (mining.py), a step (steps.py), the loss (loss.py), checkpoints, whitening
and the held-out figure (finish.py), DDP and random state (trainenv.py), file names (runs.py).
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

from ..errors import TrainConfigError, TrainError
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.features import resolve_device
from ..model.initialise import initialise_from_images
from ..model.network import PlaceModel
from ..model.runtime import release_freed_memory
from ..trainconfig import LOSSES, RESUMABLE_OVERRIDES, TRAIN_LAYERS, TrainConfig
from .evaluate import RECALL_NS, evaluate_descriptors
from .finish import final_model, heldout_recalls, save_epoch, set_keys
from .frozen import GroupsForward, Tail
from .inputs import RunInputs
from .loss import triplet_loss, triplet_terms
from .mining import GroundTruth, new_negative_cache
from .runs import BEST, FINAL, INIT, LAST, NO_PLACE_SEEN_TWICE, NOTHING_TO_LEARN
from .steps import StepInputs, mine_steps, take_step
from .trainenv import (
    DistInfo,
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
    "NOTHING_TO_LEARN",
    "NO_PLACE_SEEN_TWICE",
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
    heldout: dict[str, Any] | None = None  # {"before": {...}, "after": {...}} or None


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
        self.inputs: RunInputs | None = None

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

    def _initialise(self, model: PlaceModel) -> None:
        """k-means + alpha from the training photos, once; other ranks load rank 0's result."""
        if model.is_initialised:
            return
        self.inputs.initialised_here = True
        if self.rank0:
            keys = self.inputs.init_keys()
            alpha = initialise_from_images(
                model,
                [Path(path) for path, _ in keys],
                self.cfg.init,
                self.ecfg,
                maps=lambda pos: self.inputs.maps([keys[i] for i in pos]),
                meta={"queries": self.cfg.init_from_queries},
            )
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

    def _optimiser(self, params: list[nn.Parameter], state: dict | None) -> RunProgress:
        """Optimizer, schedule, loss scaler and hard-negative cache, restored on resume."""
        cfg = self.cfg
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

    # -- the run --

    def run(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        cfg.validate()
        if self.rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.train, self.val = load_sets(cfg)
        self.train = train = self.train.with_variants(cfg.augment.variants)
        if not train.num_db or not train.num_queries:
            raise TrainError(f"{train.source}: the training split has no database or no queries")
        # Positions alone decide whether any query can make a tuple: refuse before the model
        # is built and initialised, and say what the photos lack.
        why = GroundTruth(train).why_untrainable()
        if why:
            plain = NO_PLACE_SEEN_TWICE.format(pos=train.pos_radius_m, neg=train.neg_radius_m)
            raise TrainError(f"{plain} ({why})")
        model, state = self._model()
        params = set_trainable(model, cfg.train_layers, cfg.train_assignment_bias)
        model.eval()  # frozen batch-norm statistics, no dropout; gradients still flow
        self.inputs = RunInputs(
            cfg, model, train, self.val, self.run_dir, dist, self.device, self.amp_dtype, self.emit
        )
        self.tail, self.store = self.inputs.tail, self.inputs.store
        try:
            return self._train(model, params, state)
        finally:
            self.inputs.close()

    def _train(self, model: PlaceModel, params, state) -> TrainResult:
        cfg, dist, train = self.cfg, self.dist, self.train
        self._initialise(model)
        run = self._optimiser(params, state)
        for keys in self.inputs.fill_order():
            self.inputs.fill(keys, run.epoch)
        release_freed_memory()  # the frozen layers' batches are done with
        forward: nn.Module = GroupsForward(self.tail)
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(
                forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # nothing updates buffers: the model stays in eval mode
            )
        run.db_desc, run.q_desc = self.inputs.describe(train, run.epoch)
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
                f"{train.source}: no training query can train with the readable photos ({bad_db} "
                f"of {train.num_db} database photos and {bad_q} queries are unreadable, see the "
                "warnings); replace or remove the unreadable files"
            )
        if self.val is not None and "before" not in run.heldout:
            run.heldout["before"] = model.meta.get("heldout_before") or self.inputs.before(model)
            self.emit("heldout", stage="before", **run.heldout["before"])
        while run.epoch < cfg.epochs:
            self._epoch(model, forward, run, gt, trainable)
        model_path = final_model(
            model, run, cfg, self.run_dir, train, self.tail, self.store, dist, self.emit
        )
        if self.val is not None:
            whitened = Tail(model, self.inputs.split, self.amp_dtype, whiten=True)
            after = heldout_recalls(whitened, self.store, self.val, self.ecfg.batch_size, dist)
            run.heldout["after"] = after.to_json()
            self.emit("heldout", stage="after", **after.to_json())
            if self.rank0:  # model.pt carries the figure it is chosen by
                model.meta["training"]["heldout"] = run.heldout
                save_checkpoint(model, model_path, extra={"training": {"config": cfg.to_dict()}})
        self.emit(
            "done",
            model=str(model_path),
            best_epoch=run.best_epoch,
            **{"recall@5": run.best_r5},
            epochs=len(run.history),
            heldout=run.heldout,
        )
        return TrainResult(
            self.run_dir, model_path, run.best_epoch, run.best_r5, run.history, run.heldout or None
        )

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
        db_keys, q_keys = set_keys(self.train)
        empty = self.store.records[next(iter(self.store.records))].shape
        for s0 in range(0, len(order), seg):
            if run.stale:  # weights moved since the cache was computed
                run.db_desc, run.q_desc = self.inputs.describe(self.train, epoch)
                run.stale = False
            steps = mine_steps(
                order[s0 : s0 + seg],
                s0 // per_step,
                per_step,
                cfg.batch_size,
                gt,
                run,
                skipped,
                self.mcfg,
                cfg.seed,
                self.dist.rank,
            )
            for step in steps:
                inputs = StepInputs(step.tuples, q_keys, db_keys, self.store)
                s, v, n = self._step(forward, inputs, run, empty)
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
        if not tuples_done and skipped["easy"] and not any(r.get("tuples") for r in run.history):
            self._nothing_to_learn()
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
            db, q = self.inputs.describe(self.val, epoch)
            rec = evaluate_descriptors(self.val, db, q, RECALL_NS)
            record["recalls"] = {str(k): v for k, v in rec.recalls.items()}
            r5 = rec.recalls.get(5, 0.0)
            r1 = rec.recalls.get(1, 0.0)
            is_best = run.best_r5 is None or (r5, r1) > (run.best_r5, run.best_r1 or 0.0)
            if is_best:
                run.best_r5, run.best_r1, run.best_epoch = r5, r1, run.epoch
            self.emit("val", epoch=run.epoch, **rec.to_json(), best=is_best)
        run.history.append(record)
        path = save_epoch(model, run, cfg, self.run_dir, self.dist, is_best)
        release_freed_memory()
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

    def _step(
        self, forward: nn.Module, inputs: StepInputs, run: RunProgress, empty: tuple[int, ...]
    ) -> tuple[float, int, int]:
        """One SGD step (steps.take_step); returns (loss sum, violations, tuples) over ranks."""
        return take_step(
            forward, inputs, run, self.mcfg, self.dist, self.device, empty, self.ecfg.batch_size
        )

    def _nothing_to_learn(self) -> None:
        """The first epoch's mining found no query whose negatives come too close: say so now,
        and leave nothing that a resume would repeat (the k-means model goes too)."""
        self.emit("nothing_to_learn", message=NOTHING_TO_LEARN)
        barrier(self.dist)
        if self.rank0:
            (self.run_dir / INIT).unlink(missing_ok=True)
        raise TrainError(NOTHING_TO_LEARN)


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
