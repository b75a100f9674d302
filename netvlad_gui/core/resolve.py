"""From what a user types (a model name or a file) to a ready PlaceModel."""

from __future__ import annotations

from pathlib import Path

from .config import DEFAULT_MODEL, ModelConfig
from .errors import NetvladError

POOLINGS = ("netvlad", "fmax")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".mat", ".ckpt")


class ModelSpecError(NetvladError, ValueError):
    """A model name or file that does not name a usable model."""


def looks_like_file(spec: str | Path) -> bool:
    s = str(spec)
    return Path(s).expanduser().exists() or s.endswith(CHECKPOINT_SUFFIXES) or "/" in s


def resolve_model(
    spec: str | Path | None = None,
    backbone_weights: str | None = None,
    num_clusters: int | None = None,
):
    """A training run's folder (its final model), a checkpoint file (ours or an importable one),
    a downloaded named model, or BACKBONE-POOLING (a new model with ``num_clusters`` clusters).

    ``num_clusters`` shapes a new model only: a trained model with another K is refused.
    """
    from . import importers, zoo
    from .backbones import available_backbones
    from .model import build_model

    spec = str(spec) if spec is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_dir():
        from .train import FINAL

        if not (path / FINAL).is_file():
            raise ModelSpecError(f"{path} is a folder without {FINAL}; name a checkpoint file")
        spec, path = str(path / FINAL), path / FINAL
    if looks_like_file(spec) or zoo.is_downloadable(spec):
        if looks_like_file(spec):
            if not path.exists():
                raise ModelSpecError(f"model file not found: {path}")
        else:
            path = zoo.model_path(spec)
            if path is None:
                raise ModelSpecError(
                    f"{spec} is not downloaded yet: run `netvlad models get {spec}` "
                    "(needs the network)"
                )
        model = importers.load_any(path)
        have = getattr(model.config, "num_clusters", None)
        if num_clusters and num_clusters != have:
            raise ModelSpecError(
                f"{spec} is a trained model with {have} clusters; "
                "--num-clusters applies to a new BACKBONE-netvlad model only"
            )
        return model
    cfg = ModelConfig.from_name(spec)
    if num_clusters:
        cfg.num_clusters = num_clusters
    if cfg.backbone not in available_backbones() or cfg.pooling not in POOLINGS:
        raise ModelSpecError(
            f"unknown model {spec!r}: use BACKBONE-POOLING with a backbone among "
            f"{', '.join(available_backbones())} and pooling {' or '.join(POOLINGS)}, a named model "
            "from `netvlad models`, or a checkpoint file"
        )
    return build_model(cfg, backbone_weights)
