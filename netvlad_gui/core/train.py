"""Weakly supervised NetVLAD training (Arandjelović et al., CVPR 2016, sec. 4), as Relja/netvlad's
``trainWeakly.m`` does it.

Per epoch the training queries are visited in a seeded random order, ``batch_size`` tuples per SGD
step. Before every ``cache_refresh_queries`` queries the descriptor cache (all training database
and query images) is recomputed, and the tuples of those queries are mined from it
(:mod:`netvlad_gui.core.mining`): the best potential positive (within 10 m, nearest in descriptor
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
the last) weights with PCA-whitening fitted on the training database (4096-D, or N−1 with fewer
images). Without a validation set there is no ``best.pt``. ``resume`` continues after the last
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
  {"no_positive", "no_negative", "easy"}, "checkpoint"}`` after each epoch: queries without a
  potential positive or without a negative, and queries whose negatives all met the margin
- ``{"event": "whitening", "dim", "images"}`` and finally ``{"event": "done", "model",
  "best_epoch", "recall@5", "epochs"}``
- the CLI adds ``{"event": "error", "message"}`` when training stops on an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, read_checkpoint_header, save_checkpoint
from .config import DEFAULT_MODEL, ExtractConfig, InitConfig
from .datasets import NO_SPLIT, DataSpec, PlaceSet, SplitConfig, split_set
from .errors import TrainConfigError, TrainError
from .evaluate import RECALL_NS, evaluate_descriptors
from .features import resolve_device
from .images import ImageLoadError, load_tensor
from .initialise import initialise_from_images
from .mining import (
    DistInfo,
    Forward,
    GroundTruth,
    MiningConfig,
    TrainTuple,
    amp_dtype,
    compute_descriptors,
    mine_tuple,
    new_negative_cache,
    set_descriptors,
)
from .model import PlaceModel, fit_whitening

log = logging.getLogger(__name__)

LAST, BEST, FINAL, INIT = "last.pt", "best.pt", "model.pt", "init.pt"
STATE_VERSION = 1
LOSSES = ("squared", "unsquared")
TRAIN_LAYERS = ("last_block", "pooling", "all")
#: Options that may change when a run is resumed (they do not change the steps already taken);
#: everything else must stay as it was.
RESUMABLE_OVERRIDES = (
    "epochs",
    "device",
    "num_workers",
    "cache_batch_size",
    "amp",
    "amp_dtype",
    "whitening_dim",
    "keep_epoch_checkpoints",
)

ProgressCallback = Callable[[dict], None]


@dataclass
class TrainConfig:
    """Every knob of a training run; defaults are the paper's (``trainWeakly.m``)."""

    data: DataSpec = field(default_factory=DataSpec)
    val: DataSpec = field(default_factory=DataSpec)  # an explicit validation set (optional)
    split: SplitConfig | None = None  # None: the source's default (a folder 70/15/15, else whole)
    model: str = DEFAULT_MODEL
    backbone_weights: str | None = None  # None: the shipped / torchvision weights
    num_clusters: int | None = None  # None: the model's own (64)
    epochs: int = 30
    batch_size: int = 4  # training tuples per SGD step
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    loss: str = "squared"  # "squared" (the paper) or "unsquared" (the PyTorch ports)
    margin: float | None = None  # None: 0.1 squared, sqrt(0.1) unsquared
    neg_samples: int = 1000  # nNegChoice
    neg_cache: int = 10  # nNegCache
    neg_per_tuple: int = 10  # nNegCap
    cache_refresh_queries: int = 1000  # compFeatsFrequency
    train_layers: str = "last_block"  # "last_block", "pooling" (NetVLAD only) or "all"
    train_assignment_bias: bool = False  # Relja's layerVLAD keeps b_k = 0
    image_size: int = 640
    cache_batch_size: int = 8
    num_workers: int = 1
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    amp_dtype: str = "auto"  # "auto" (bfloat16 where supported, else float16 + loss scaling)
    seed: int = 0
    whitening_dim: int | None = 4096  # None or 0: no PCA-whitening
    keep_epoch_checkpoints: bool = False
    init: InitConfig = field(default_factory=InitConfig)

    @property
    def effective_margin(self) -> float:
        if self.margin is not None:
            return float(self.margin)
        return 0.1 if self.loss == "squared" else math.sqrt(0.1)

    def check(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_step_epochs": self.lr_step_epochs,
            "neg_samples": self.neg_samples,
            "neg_per_tuple": self.neg_per_tuple,
            "cache_refresh_queries": self.cache_refresh_queries,
            "image_size": self.image_size,
            "cache_batch_size": self.cache_batch_size,
        }
        for name, value in positive.items():
            if not (isinstance(value, int | float) and value > 0):
                raise TrainConfigError(f"{name} must be > 0, got {value!r}")
        if self.loss not in LOSSES:
            raise TrainConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.train_layers not in TRAIN_LAYERS:
            raise TrainConfigError(
                f"train_layers must be one of {TRAIN_LAYERS}, got {self.train_layers!r}"
            )
        if self.effective_margin <= 0:
            raise TrainConfigError(f"margin must be > 0, got {self.margin}")
        if not 0 < self.momentum < 1 and self.momentum != 0:
            raise TrainConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise TrainConfigError("weight_decay must be >= 0 and lr_gamma in (0, 1]")
        if self.neg_cache < 0 or self.num_workers < 0:
            raise TrainConfigError("neg_cache and num_workers must be >= 0")
        if self.whitening_dim is not None and self.whitening_dim < 0:
            raise TrainConfigError(f"whitening_dim must be >= 0, got {self.whitening_dim}")
        self.data.kind  # noqa: B018 - raises when no (or several) sources are named

    def mining(self) -> MiningConfig:
        return MiningConfig(
            self.neg_samples,
            self.neg_cache,
            self.neg_per_tuple,
            self.effective_margin,
            self.loss == "squared",
        )

    def extract_config(self) -> ExtractConfig:
        return ExtractConfig(
            image_size=self.image_size,
            batch_size=self.cache_batch_size,
            num_workers=self.num_workers,
            device=self.device,
            # NCHW: channels_last rounds a little differently per batch size, and the cache of a
            # DDP rank (its share of the batches) must equal a single process's.
            channels_last=False,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TrainConfigError(f"unknown training options {sorted(unknown)}")
        d["data"] = DataSpec(**(d.get("data") or {}))
        d["val"] = DataSpec(**(d.get("val") or {}))
        if d.get("split") is not None:
            d["split"] = SplitConfig(**d["split"])
        d["init"] = InitConfig(**(d.get("init") or {}))
        return cls(**d)


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    best_epoch: int | None
    best_recall5: float | None
    history: list[dict]


# --- the loss -------------------------------------------------------------------------------


def triplet_terms(
    q: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    margin: float,
    squared: bool = True,
    pos_mask: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinge terms max(min_i d(q, p_i) + m − d(q, n_j), 0), shape (T, M); 0 where masked.

    ``q`` (T, D), ``pos`` (T, P, D), ``neg`` (T, M, D); d is the squared Euclidean distance
    (the paper) or, with ``squared=False``, the plain one (the PyTorch ports).
    """
    d_pos = ((pos - q[:, None, :]) ** 2).sum(-1)
    d_neg = ((neg - q[:, None, :]) ** 2).sum(-1)
    if not squared:
        d_pos, d_neg = d_pos.clamp_min(1e-12).sqrt(), d_neg.clamp_min(1e-12).sqrt()
    if pos_mask is not None:
        d_pos = d_pos.masked_fill(~pos_mask, float("inf"))
    terms = (d_pos.min(dim=1, keepdim=True).values + margin - d_neg).clamp_min(0)
    if neg_mask is not None:
        terms = terms * neg_mask
    return terms


def triplet_loss(
    q, pos, neg, *, margin: float = 0.1, squared: bool = True, pos_mask=None, neg_mask=None
) -> torch.Tensor:
    """The paper's eq. (7) summed over tuples: sum_j max(min_i d²(q,p_i) + m − d²(q,n_j), 0)."""
    return triplet_terms(
        q, pos, neg, margin=margin, squared=squared, pos_mask=pos_mask, neg_mask=neg_mask
    ).sum()


# --- which weights train --------------------------------------------------------------------


def last_block(model: PlaceModel) -> nn.Module:
    """The backbone's last conv block, the part the paper trains (conv5 onwards)."""
    bb = model.backbone
    if hasattr(bb, "layer4"):  # ResNet
        return bb.layer4
    children = list(bb.children())
    if model.config.backbone == "alexnet":  # conv5 alone, as the ports do
        convs = [m for m in children if isinstance(m, nn.Conv2d)]
        return convs[-1]
    pools = [i for i, m in enumerate(children) if isinstance(m, nn.MaxPool2d)]
    if model.config.backbone.startswith("vgg") and pools:  # conv5_1 .. conv5_3
        return nn.Sequential(*children[pools[-1] + 1 :])
    with_params = [m for m in children if any(True for _ in m.parameters())]
    return with_params[-1]


def set_trainable(
    model: PlaceModel, layers: str, assignment_bias: bool = False
) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze what ``layers`` names; returns the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts: list[nn.Module] = [model.pool]
    if layers == "last_block":
        parts.append(last_block(model))
    elif layers == "all":
        parts.append(model.backbone)
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
    conv = getattr(model.pool, "conv", None)
    if conv is not None and conv.bias is not None and not assignment_bias:
        conv.bias.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainConfigError(
            f"{model.config.name} with train_layers={layers!r} has nothing to train"
        )
    return params


class _GroupsForward(nn.Module):
    """One forward over several same-shape image batches, so DDP sees one pass per step."""

    def __init__(self, model: PlaceModel, autocast: torch.dtype | None) -> None:
        super().__init__()
        self.inner = Forward(model, autocast)

    def forward(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.inner(g) for g in groups]


# --- loading a step's images ----------------------------------------------------------------


@dataclass
class _Step:
    index: int  # 0-based step in the epoch
    tuples: list[TrainTuple]  # this rank's share
    total_tuples: int  # over all ranks


class _StepImages(Dataset):
    """A step's images (query, positive, negatives of each tuple), decoded in DataLoader workers."""

    def __init__(self, steps: list[_Step], ps: PlaceSet, image_size: int, max_pixels: int) -> None:
        self.steps, self.ps, self.size, self.max_pixels = steps, ps, image_size, max_pixels

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int):
        step = self.steps[i]
        keys: list[tuple[str, int]] = []
        for t in step.tuples:
            for key in [("q", t.query), ("db", t.positive), *(("db", int(n)) for n in t.negatives)]:
                if key not in keys:
                    keys.append(key)
        images: dict[tuple[str, int], torch.Tensor] = {}
        for key in keys:
            path = self.ps.q_paths[key[1]] if key[0] == "q" else self.ps.db_paths[key[1]]
            try:
                images[key] = load_tensor(path, self.size, self.max_pixels)
            except (ImageLoadError, OSError) as exc:
                log.warning("%s: %s; its tuple is skipped", path, exc)
        tuples = [
            t
            for t in step.tuples
            if ("q", t.query) in images
            and ("db", t.positive) in images
            and all(("db", int(n)) in images for n in t.negatives)
        ]
        return step, tuples, images


def _identity(x):
    return x


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --- distributed ----------------------------------------------------------------------------


def setup_distributed(device: str = "auto") -> tuple[DistInfo, bool]:
    """Join the torchrun job named by the environment (WORLD_SIZE > 1), else a single process.

    Returns the rank's info and whether this call created the process group (and must end it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, resolve_device(device)), False
    import torch.distributed as tdist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("CUDA was asked for, but no CUDA GPU is available; use --device cpu")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    created = False
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
        created = True
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), dev), created


def _barrier(dist: DistInfo) -> None:
    if dist.active:
        import torch.distributed as tdist

        tdist.barrier()


def _all_reduce_sum(values: list[float], dist: DistInfo) -> list[float]:
    if not dist.active:
        return values
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t)
    return t.cpu().tolist()


# --- RNG and state --------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # another number of GPUs: not worth failing for
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def read_train_state(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and training state stored in ``run_dir/last.pt`` (for resume and for GUIs)."""
    path = Path(run_dir) / LAST
    if not path.is_file():
        raise TrainError(f"{run_dir}: no {LAST} to resume from (no finished epoch yet)")
    header = read_checkpoint_header(path)
    state = (header.get("extra") or {}).get("train_state")
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainError(f"{path}: not a training checkpoint of this version")
    return TrainConfig.from_dict(state["config"]), state


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The stored config of a run, with the few options a resume may change.

    Any other option given with a different value raises: a resumed run must be the same run.
    """
    cfg, _ = read_train_state(run_dir)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        current = getattr(cfg, key) if hasattr(cfg, key) else None
        if key in RESUMABLE_OVERRIDES:
            setattr(cfg, key, value)
        elif key in ("data", "val"):
            if value.given and value != current:
                raise TrainConfigError(
                    f"--resume continues the run's own data ({current.describe()}); "
                    "leave the data options out or use another --out"
                )
        elif value != current:
            raise TrainConfigError(
                f"cannot change {key} on --resume (run has {current!r}, asked {value!r}); "
                "use another --out for a new run"
            )
    return cfg


# --- the trainer ----------------------------------------------------------------------------


def load_sets(cfg: TrainConfig) -> tuple[PlaceSet, PlaceSet | None]:
    """Training and validation sets of a config (validation may be None)."""
    ps = cfg.data.load()
    split = cfg.split or SplitConfig(fractions=cfg.data.default_fractions())
    val: PlaceSet | None = None
    if tuple(split.fractions[1:]) == NO_SPLIT[1:]:
        train = ps
    else:
        parts = split_set(ps, split)
        train, val = parts["train"], parts["val"]
    if cfg.val.given:
        val = cfg.val.load()
    if val is not None and (not val.num_db or not val.num_queries):
        val = None
    return train, val


def _strip_whitening(model: PlaceModel) -> PlaceModel:
    """Training shapes the pooled descriptor; whitening is refitted after training."""
    if model.whiten is not None:
        model.whiten = None
        model.config.whitening_dim = None
    return model


@dataclass
class _Progress:
    """What changes as a run goes: the optimisation state, the caches and the history."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    neg_cache: np.ndarray
    epoch: int = 0  # finished epochs
    best_r5: float | None = None
    best_r1: float | None = None  # breaks ties of R@5 (small validation sets saturate)
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    db_desc: np.ndarray | None = None
    q_desc: np.ndarray | None = None
    stale: bool = False  # weights changed since the descriptor cache was computed


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
        self.device = dist.device or resolve_device(cfg.device)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = amp_dtype(cfg.amp_dtype) if self.use_amp else None
        self.ecfg = cfg.extract_config()
        self.mcfg = cfg.mining()

    def emit(self, event: str, **fields) -> None:
        if self._progress is not None and self.rank0:
            self._progress({"event": event, **fields})

    # -- set-up --

    def _model(self) -> tuple[PlaceModel, dict[str, Any] | None]:
        last = self.run_dir / LAST
        if self.resume and last.is_file():
            _, state = read_train_state(self.run_dir)
            model = _strip_whitening(load_checkpoint(last))
            model.extra = {}
            return model.to(self.device), state
        if self.resume and (self.run_dir / INIT).is_file():
            return _strip_whitening(load_checkpoint(self.run_dir / INIT)).to(self.device), None
        if self.resume:
            raise TrainError(f"{self.run_dir}: nothing to resume (no {LAST} or {INIT})")
        from .resolve import resolve_model

        model = resolve_model(self.cfg.model, self.cfg.backbone_weights, self.cfg.num_clusters)
        return _strip_whitening(model).to(self.device), None

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
        _barrier(self.dist)
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
        self, forward: nn.Module, tuples: list[TrainTuple], images: dict, run: _Progress
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
        outs = forward(groups)  # mixed precision inside (backbone only), see Forward
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
                margin=self.mcfg.margin,
                squared=self.mcfg.squared,
                neg_mask=mask,
            )
            local_sum, local_viol = terms.sum(), int((terms > 0).sum())
        else:
            local_sum, local_viol = desc.sum() * 0.0, 0
        total_sum, total_viol, total_tuples = _all_reduce_sum(
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

    def _optimiser(self, model: PlaceModel, state: dict | None) -> _Progress:
        """Optimizer, schedule, loss scaler and hard-negative cache, restored on resume."""
        cfg = self.cfg
        params = set_trainable(model, cfg.train_layers, cfg.train_assignment_bias)
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        run = _Progress(
            optimizer=opt,
            scheduler=torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step_epochs, cfg.lr_gamma),
            scaler=torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None,
            neg_cache=new_negative_cache(len(self.train.q_paths), cfg.neg_cache),
        )
        if state is None:
            return run
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.scaler is not None and state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        cache = state["neg_cache"].numpy()
        if cache.shape[0] == run.neg_cache.shape[0]:
            width = min(cache.shape[1], run.neg_cache.shape[1])
            run.neg_cache[:, :width] = cache[:, :width]
        run.epoch = int(state["epoch"])
        run.best_r5, run.best_epoch = state.get("best_recall5"), state.get("best_epoch")
        run.best_r1 = state.get("best_recall1")
        run.history = list(state.get("history") or [])
        _set_rng_state(state["rng"])
        return run

    def run(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        cfg.check()
        if self.rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        _seed_everything(cfg.seed)
        self.train, self.val = load_sets(cfg)
        train = self.train
        if not train.num_db or not train.num_queries:
            raise TrainError(f"{train.name}: the training split has no database or no queries")
        model, state = self._model()
        self._initialise(model, train)
        run = self._optimiser(model, state)
        model.eval()  # frozen batch-norm statistics, no dropout; gradients still flow
        forward: nn.Module = _GroupsForward(model, self.amp_dtype)
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
        if not len(trainable):
            raise TrainError(
                f"{train.name}: no training query has a potential positive within "
                f"{train.pos_radius_m:g} m and a negative beyond {train.neg_radius_m:g} m"
            )
        while run.epoch < cfg.epochs:
            self._epoch(model, forward, run, gt, trainable)
        model_path = self._finish(model, run)
        return TrainResult(self.run_dir, model_path, run.best_epoch, run.best_r5, run.history)

    def _epoch(self, model, forward, run: _Progress, gt: GroundTruth, trainable) -> None:
        """One pass over the training queries, then validation and checkpoints."""
        cfg, epoch, t0 = self.cfg, run.epoch, time.monotonic()
        lr = run.optimizer.param_groups[0]["lr"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(trainable)
        per_step = cfg.batch_size * self.dist.world
        seg = max(1, math.ceil(cfg.cache_refresh_queries / per_step)) * per_step
        steps_total = math.ceil(len(order) / per_step)
        skipped = Counter(self.untrainable)
        loss_sum = tuples_done = 0.0
        for s0 in range(0, len(order), seg):
            if run.stale:  # weights moved since the cache was computed
                run.db_desc, run.q_desc = self._cache(model, self.train, epoch)
                run.stale = False
            steps = self._mine(order[s0 : s0 + seg], s0 // per_step, per_step, gt, run, skipped)
            for step, tuples, images in self._load(steps, self.train):
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
        record: dict[str, Any] = {
            "epoch": run.epoch,
            "loss": loss_sum / max(tuples_done, 1),
            "lr": lr,
            "tuples": int(tuples_done),
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
            skipped={k: int(skipped[k]) for k in ("no_positive", "no_negative", "easy")},
            checkpoint=str(path),
        )

    def _mine(
        self,
        queries,
        first_step: int,
        per_step: int,
        gt: GroundTruth,
        run: _Progress,
        skipped: Counter,
    ) -> list[_Step]:
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
                steps.append(_Step(first_step + i, mine, total))
        return steps

    def _load(self, steps: list[_Step], ps: PlaceSet):
        ds = _StepImages(steps, ps, self.cfg.image_size, self.ecfg.max_pixels)
        if self.cfg.num_workers <= 0 or len(steps) < 2:
            yield from (ds[i] for i in range(len(ds)))
            return
        yield from DataLoader(
            ds,
            batch_size=None,
            collate_fn=_identity,
            worker_init_fn=_worker_init,
            num_workers=min(self.cfg.num_workers, len(steps)),
            prefetch_factor=2,
        )

    def _save(self, model: PlaceModel, run: _Progress, is_best: bool) -> Path:
        last = self.run_dir / LAST
        if self.rank0:
            state = {
                "version": STATE_VERSION,
                "epoch": run.epoch,
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                "neg_cache": torch.from_numpy(run.neg_cache.copy()),
                "best_recall5": run.best_r5,
                "best_recall1": run.best_r1,
                "best_epoch": run.best_epoch,
                "history": run.history,
                "rng": _rng_state(),
                "config": self.cfg.to_dict(),
                "world_size": self.dist.world,
            }
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
        _barrier(self.dist)
        return last

    def _finish(self, model: PlaceModel, run: _Progress) -> Path:
        """Best (else last) weights + PCA-whitening fitted on the training database -> model.pt."""
        best = self.run_dir / BEST
        if run.best_epoch is not None and best.is_file():
            model.load_state_dict(load_checkpoint(best).state_dict())
        for p in model.parameters():
            p.requires_grad_(False)
        if self.cfg.whitening_dim:
            descs, _ = compute_descriptors(
                Forward(model, self.amp_dtype, pooled=True),
                self.train.db_paths,
                self.ecfg,
                dist=self.dist,
            )
            descs = descs[np.isfinite(descs).all(axis=1)]
            if len(descs) >= 2:
                fit_whitening(model, descs, self.cfg.whitening_dim)
                self.emit("whitening", dim=model.config.whitening_dim, images=len(descs))
            else:
                log.warning("too few database images to fit whitening; model.pt has none")
        model.meta["training"] = {
            "epochs": len(run.history),
            "best_epoch": run.best_epoch,
            "best_recall5": run.best_r5,
            "data": self.cfg.data.describe(),
            "train_images": self.train.num_db,
            "history": run.history,
        }
        path = self.run_dir / FINAL
        if self.rank0:
            save_checkpoint(model, path, extra={"training": {"config": self.cfg.to_dict()}})
        _barrier(self.dist)
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
    dist, created = setup_distributed(cfg.device)
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
            f"CUDA out of memory with {cfg.batch_size} tuples of up to {2 + cfg.neg_per_tuple} "
            f"images at {cfg.image_size} px per step: try --batch-size "
            f"{max(1, cfg.batch_size // 2)} (or a smaller --image-size or --neg-per-tuple); {kept}"
        ) from None
    finally:
        if created:
            import torch.distributed as tdist

            tdist.destroy_process_group()
