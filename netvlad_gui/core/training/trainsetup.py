"""What a training run starts from: its sets, its model, which of its weights train, and the
config and state a stored run holds (written every epoch, read by ``--resume`` and by fronts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainConfigError, TrainError
from ..model.checkpoint import read_checkpoint_header
from ..model.network import PlaceModel
from ..trainconfig import NO_SPLIT, RESUMABLE_OVERRIDES, SplitConfig, TrainConfig
from .datasets import load_spec, split_set
from .placeset import PlaceSet
from .runs import LAST
from .trainenv import rng_state, set_rng_state

STATE_VERSION = 1  # of ``last.pt``'s ``extra["train_state"]``


def load_sets(cfg: TrainConfig) -> tuple[PlaceSet, PlaceSet | None]:
    """Training and validation sets of a config (validation may be None)."""
    ps = load_spec(cfg.data)
    split = cfg.split or SplitConfig(fractions=cfg.data.training_fractions(cfg.val.given))
    val: PlaceSet | None = None
    if tuple(split.fractions[1:]) == NO_SPLIT[1:]:
        train = ps
    else:
        parts = split_set(ps, split)
        train, val = parts["train"], parts["val"]
    if cfg.val.given:
        val = load_spec(cfg.val)
    if val is not None and (not val.num_db or not val.num_queries):
        val = None
    return train, val


def fresh_model(cfg: TrainConfig) -> PlaceModel:
    """The model a new run starts from (``resolve_model``'s rules), without its whitening."""
    from ..model.resolve import resolve_model

    return strip_whitening(resolve_model(cfg.model, cfg.backbone_weights, cfg.num_clusters))


def strip_whitening(model: PlaceModel) -> PlaceModel:
    """Training shapes the pooled descriptor; whitening is refitted after training."""
    if model.whiten is not None:
        model.whiten = None
        model.config.whitening_dim = None
    return model


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
        try:
            current = cfg.option(key)
        except AttributeError:
            raise TrainConfigError(f"unknown training option {key!r}") from None
        if key in RESUMABLE_OVERRIDES:
            cfg.set_options(**{key: value})
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


@dataclass
class RunProgress:
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
    # Recall@N on the held-out places: {"before": {...}, "after": {...}} (recalls as fractions)
    heldout: dict[str, Any] = field(default_factory=dict)

    def state(self, cfg: TrainConfig, world_size: int) -> dict[str, Any]:
        """``last.pt``'s ``extra["train_state"]``: plain types and tensors (``weights_only``)."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "neg_cache": torch.from_numpy(self.neg_cache.copy()),
            "best_recall5": self.best_r5,
            "best_recall1": self.best_r1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "heldout": self.heldout,
            "rng": rng_state(),
            "config": cfg.to_dict(),
            "world_size": world_size,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a stored ``state`` (this process's random state included)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        cache = state["neg_cache"].numpy()
        if cache.shape[0] == self.neg_cache.shape[0]:
            width = min(cache.shape[1], self.neg_cache.shape[1])
            self.neg_cache[:, :width] = cache[:, :width]
        self.epoch = int(state["epoch"])
        self.best_r5, self.best_epoch = state.get("best_recall5"), state.get("best_epoch")
        self.best_r1 = state.get("best_recall1")
        self.history = list(state.get("history") or [])
        self.heldout = dict(state.get("heldout") or {})
        set_rng_state(state["rng"])
