"""A torch network as an :class:`~netvlad_gui.core.model.inference.InferenceModel`: photo pixels
in, numpy out, with ``ExtractConfig``'s switches (device, folded BatchNorm, memory layout,
precision) as ``features.describe_batch`` applies them."""

from __future__ import annotations

import numpy as np
import torch

from ..config import ExtractConfig
from . import onnxbackbone
from .features import autocast_dtype, describe_batch, inference_model
from .network import init_netvlad
from .runtime import backbone_precision


def pixels_to_batch(pixels: np.ndarray) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] of (B, H, W, 3) uint8: ``images.pixels_to_tensor`` of each
    photo, stacked (the same values and memory order as extraction always fed the network)."""
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:  # torch wants to own writable memory
        pixels = pixels.copy()
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)


class TorchModel:
    """``model`` (a PlaceModel, or any network giving descriptors) run by torch for ``cfg``."""

    def __init__(self, model: torch.nn.Module, cfg: ExtractConfig) -> None:
        self.source, self.cfg = model, cfg
        self.net = inference_model(model, cfg)
        self.device = next(self.net.parameters()).device
        ort = isinstance(getattr(self.net, "backbone", None), onnxbackbone.OrtBackbone)
        self.runtime = "onnxruntime" if ort else "torch"
        self.precision = "fp32" if ort else backbone_precision(cfg, self.device.type)

    @property
    def dim(self) -> int:
        return int(getattr(self.net, "dim", 0))

    @property
    def local_dim(self) -> int:
        return int(getattr(self.net, "local_dim", 0))

    @property
    def num_clusters(self) -> int:
        return int(getattr(getattr(self.source, "pool", None), "num_clusters", 1))

    def _batch(self, pixels: np.ndarray) -> torch.Tensor:
        batch = pixels_to_batch(pixels).contiguous().to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def describe_pixels(
        self, pixels: np.ndarray, *, with_map: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            descs, maps = describe_batch(self.net, self._batch(pixels), self.cfg, with_map=with_map)
        return descs, (None if maps is None else maps.numpy())

    @property
    def meta(self) -> dict:
        return self.source.meta

    def maps_of(self, pixels: np.ndarray) -> np.ndarray:
        autocast = autocast_dtype(self.cfg, self.device.type) if self.precision == "bf16" else None
        with torch.inference_mode():
            maps = self.net.local_features(self._batch(pixels), autocast=autocast)
            return maps.float().cpu().numpy()

    def pool_maps(self, maps: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(maps, dtype=np.float32)).to(self.device)
            return self.net.head(x).float().cpu().numpy()

    def init_netvlad(self, samples: np.ndarray, init_cfg) -> float:
        """Initialise the NetVLAD layer (``network.init_netvlad``) and refresh the inference copy."""
        alpha = init_netvlad(self.source, samples, init_cfg)
        self.net = inference_model(self.source, self.cfg)
        return alpha
