"""What a training run starts from: its sets, its model, which of its weights train, and the
config and state a stored run holds (for ``--resume`` and for fronts that show a run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import read_checkpoint_header
from .config import DEFAULT_MODEL, RESUMABLE_OVERRIDES, ModelConfig, TrainConfig
from .datasets import NO_SPLIT, PlaceSet, SplitConfig, split_set
from .errors import TrainConfigError, TrainError
from .model import PlaceModel, build_model
from .runs import LAST

STATE_VERSION = 1  # of ``last.pt``'s ``extra["train_state"]``


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


def fresh_model(cfg: TrainConfig) -> PlaceModel:
    from . import zoo
    from .resolve import looks_like_file, resolve_model

    spec = cfg.model or DEFAULT_MODEL
    if looks_like_file(spec) or zoo.is_downloadable(spec):
        model = resolve_model(spec, cfg.backbone_weights)
        if cfg.num_clusters and cfg.num_clusters != getattr(model.config, "num_clusters", None):
            raise TrainConfigError(
                f"{spec} has {model.config.num_clusters} clusters; "
                "--num-clusters only applies to a new model"
            )
    else:
        mc = ModelConfig.from_name(spec)
        if cfg.num_clusters:
            mc.num_clusters = cfg.num_clusters
        model = build_model(mc, cfg.backbone_weights)
    return strip_whitening(model)


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
