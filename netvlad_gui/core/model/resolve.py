"""From what a user types (a model name or a file) to a ready PlaceModel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_MODEL, POOLINGS, ModelConfig
from ..errors import NetvladError
from .runfiles import FINAL

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
    from .network import build_model

    spec = str(spec) if spec is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_dir():
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


#: The kinds of `ModelProblem`, so each front can word them its own way.
MISSING_FILE, NOT_DOWNLOADED, MISSING_WEIGHTS_FILE, NO_BACKBONE_WEIGHTS = (
    "missing_file",
    "not_downloaded",
    "missing_weights_file",
    "no_backbone_weights",
)


@dataclass(frozen=True)
class ModelProblem:
    """Why a model spec cannot be built on this machine, as data (``kind`` is one of the above).

    ``path`` is the missing file (checkpoint or backbone weights); ``backbone`` the backbone
    whose ImageNet weights are missing. ``message`` is a plain one-line wording for any front.
    """

    kind: str
    spec: str
    path: str = ""
    backbone: str = ""

    @property
    def message(self) -> str:
        if self.kind == MISSING_FILE:
            return f"model file not found: {self.path}"
        if self.kind == NOT_DOWNLOADED:
            return f"{self.spec} is not downloaded yet: run `netvlad models get {self.spec}`"
        if self.kind == MISSING_WEIGHTS_FILE:
            return f"backbone weights file not found: {self.path}"
        return (
            f"no usable weights for {self.spec}: the ImageNet weights of {self.backbone} are not "
            "on this machine; pass a backbone weights file"
        )


def check_model(spec: str | None = None, backbone_weights: str = "") -> ModelProblem | None:
    """Whether `resolve_model(spec, backbone_weights)` can work here, without building anything.

    Cheap (file and cache look-ups only), so a front can ask it on every keystroke. An unknown
    name is not reported here: `resolve_model` says why when it is used.
    """
    from . import zoo

    spec = (spec or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    if looks_like_file(spec):
        if not Path(spec).expanduser().is_file():
            return ModelProblem(MISSING_FILE, spec, path=spec)
        return None
    if zoo.is_downloadable(spec):
        return ModelProblem(NOT_DOWNLOADED, spec) if zoo.model_path(spec) is None else None
    if backbone_weights:
        if backbone_weights != "none" and not Path(backbone_weights).expanduser().is_file():
            return ModelProblem(MISSING_WEIGHTS_FILE, spec, path=backbone_weights)
        return None
    if zoo.is_named_model(spec) and not zoo.model_info(spec).available:
        return ModelProblem(NO_BACKBONE_WEIGHTS, spec, backbone=spec.split("-", 1)[0])
    return None
