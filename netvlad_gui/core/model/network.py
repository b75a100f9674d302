"""The place-recognition network: backbone -> NetVLAD or f_max -> optional PCA-whitening.

Submodule and parameter names are a contract with checkpoints and importers: ``backbone.*``,
``pool.centroids``, ``pool.conv.weight``, ``pool.conv.bias``, ``whiten.weight``, ``whiten.bias``,
``input_mean``, ``input_std``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from netvlad_gui.core.config import InitConfig, ModelConfig
from netvlad_gui.core.errors import ConfigError
from netvlad_gui.core.model.backbones import PADDINGS, Normalization, load_backbone
from netvlad_gui.core.model.head import sample_from_feature_maps
from netvlad_gui.core.model.pooling import FMax, NetVLAD, Whitening
from netvlad_gui.core.trainconfig import TrainConfig

#: The former name of the error of a ModelConfig that builds no model.
ModelConfigError = ConfigError


class Description(NamedTuple):
    """What :meth:`PlaceModel.describe` gives for a batch of images."""

    descriptors: torch.Tensor  # (B, dim) float32: pooled, then whitened (unless asked not to)
    maps: torch.Tensor | None  # (B, D, H', W') float32 backbone output, when asked for


class PlaceModel(nn.Module):
    """Images (B, 3, H, W), RGB in [0, 1] -> L2-normalised global descriptors (B, dim)."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module,
        local_dim: int,
        normalization: Normalization,
        padding: str = "torch",
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        if padding not in PADDINGS:
            raise ConfigError(f"padding {padding!r} is not one of {PADDINGS}")
        self.config = config
        self.padding = padding
        self.meta: dict[str, Any] = dict(meta or {})
        self._local_dim = local_dim
        self.backbone = backbone
        if config.pooling == "netvlad":
            self.pool: nn.Module = NetVLAD(local_dim, config.num_clusters)
        else:
            self.pool = FMax()
        self.register_module("whiten", None)
        if config.whitening_dim is not None:
            if not 1 <= config.whitening_dim <= self.pool_dim:
                raise ConfigError(
                    f"whitening_dim must be in 1..{self.pool_dim}, got {config.whitening_dim}"
                )
            self.whiten = Whitening(self.pool_dim, config.whitening_dim)
        self.register_buffer("input_mean", torch.tensor(normalization.mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(normalization.std, dtype=torch.float32))

    @property
    def local_dim(self) -> int:
        """Channels D of the backbone output (local descriptor size)."""
        return self._local_dim

    @property
    def pool_dim(self) -> int:
        """Size of the pooled descriptor before whitening."""
        return self.pool.output_dim if isinstance(self.pool, NetVLAD) else self._local_dim

    @property
    def dim(self) -> int:
        """Size of the final global descriptor."""
        return self.whiten.out_dim if self.whiten is not None else self.pool_dim

    @property
    def is_initialised(self) -> bool:
        return bool(self.pool.initialised) if isinstance(self.pool, NetVLAD) else True

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.input_mean.tolist()), tuple(self.input_std.tolist()))

    @property
    def device(self) -> torch.device:
        return self.input_mean.device

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        return (images - self.input_mean.view(1, 3, 1, 1)) / self.input_std.view(1, 3, 1, 1)

    def local_features(
        self, images: torch.Tensor, *, autocast: torch.dtype | None = None
    ) -> torch.Tensor:
        """Backbone output (B, D, H', W') for RGB images in [0, 1]; with ``autocast`` (e.g.
        ``torch.bfloat16``) the backbone runs in that precision and so does its output."""
        if autocast is None:
            return self.backbone(self._normalise(images))
        with torch.autocast(images.device.type, dtype=autocast):
            return self.backbone(self._normalise(images))

    def head(self, maps: torch.Tensor, *, whiten: bool = True) -> torch.Tensor:
        """Pool, then whiten: the global descriptors (B, dim) of backbone maps, in float32.

        NetVLAD subtracts the soft-assigned centroids from the summed features; in low precision
        that small residual drowns in rounding (descriptors of a trained model collapse), so the
        head never runs in reduced precision, even inside a caller's autocast region.
        ``whiten=False`` stops before whitening (what whitening is fitted on).
        """
        kind = maps.device.type
        full = torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else nullcontext()
        with full:
            x = self.pool(maps.float())
            if whiten and self.whiten is not None:
                x = self.whiten(x)
        return x

    def describe(
        self,
        images: torch.Tensor,
        *,
        with_map: bool = False,
        autocast: torch.dtype | None = None,
        whiten: bool = True,
    ) -> Description:
        """The one forward pass: backbone (under ``autocast`` when given), then :meth:`head`.

        ``with_map`` also returns the backbone maps (float32, whatever the backbone's
        precision), so that verification by patches needs no second pass over the photo.
        """
        maps = self.local_features(images, autocast=autocast).float()
        return Description(self.head(maps, whiten=whiten), maps if with_map else None)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptors before whitening (B, pool_dim): what whitening is fitted on."""
        return self.describe(images, whiten=False).descriptors

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.describe(images).descriptors


def build_model(
    config: ModelConfig,
    backbone_weights: str | Path | None = None,
    *,
    normalization: Normalization | None = None,
    padding: str | None = None,
    progress: bool = True,
) -> PlaceModel:
    """Build a model in eval mode; ``normalization``/``padding`` override what the weights imply."""
    bb = load_backbone(config.backbone, backbone_weights, padding=padding, progress=progress)
    return PlaceModel(
        config,
        bb.module,
        bb.dim,
        normalization or bb.normalization,
        bb.padding,
        meta={"backbone_weights": bb.source},
    ).eval()


@torch.inference_mode()
def sample_local_descriptors(
    model: PlaceModel, images: Iterable[torch.Tensor], per_image: int, seed: int
) -> np.ndarray:
    """Up to ``per_image`` L2-normalised local descriptors per image at random positions.

    ``images`` yields single images (3, H, W) or batches (B, 3, H, W). Returns (M, D) float32.
    """
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")

    def maps():
        for batch in images:
            batch = batch.unsqueeze(0) if batch.ndim == 3 else batch
            feats = model.local_features(batch.to(model.device, torch.float32))
            yield from feats.float().cpu().numpy()

    return sample_from_feature_maps(maps(), per_image, seed, model.local_dim)


def init_netvlad(model: PlaceModel, local_descriptors: np.ndarray, cfg: InitConfig) -> float:
    """The paper's k-means + alpha initialisation of the NetVLAD layer; returns alpha."""
    if not isinstance(model.pool, NetVLAD):
        raise ConfigError(f"{model.config.name}: only NetVLAD pooling needs initialisation")
    alpha = model.pool.initialise(local_descriptors, iters=cfg.kmeans_iters, seed=cfg.seed)
    model.meta["netvlad_alpha"] = alpha
    model.meta["netvlad_init"] = dataclasses.asdict(cfg) | {
        "num_descriptors": len(local_descriptors)
    }
    return alpha


def fit_whitening(
    model: PlaceModel, descriptors: np.ndarray, out_dim: int | None = TrainConfig.whitening_dim
) -> None:
    """Fit PCA-whitening on un-whitened global descriptors (N, pool_dim) from ``model.pooled``.

    The output size is ``min(out_dim, N - 1, pool_dim)``; ``config.whitening_dim`` records it.
    """
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[1] != model.pool_dim:
        raise ValueError(
            f"whitening needs un-whitened descriptors (N, {model.pool_dim}), got {descriptors.shape}"
        )
    n = descriptors.shape[0]
    if n < 2:
        raise ValueError(f"whitening needs at least 2 descriptors, got {n}")
    dim = min(n - 1, model.pool_dim) if out_dim is None else min(out_dim, n - 1, model.pool_dim)
    whiten = Whitening(model.pool_dim, dim)
    whiten.fit(descriptors)
    model.whiten = whiten.to(model.device)
    model.config.whitening_dim = dim
    model.meta["whitening_fitted_on"] = n
