"""A torch network run for inference: extraction's switches (device, folded BatchNorm, memory
layout, precision), ``TorchModel`` (the torch ``InferenceModel``: pixels in, numpy out) and
batched extraction with torch (``extract``: the loop of ``extraction.py``).

Extraction yields results as they come so that the index can stream them to disk, and a bad
image is reported and skipped instead of ending the run.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..cancel import Cancelled  # noqa: F401 - callers import it from here
from ..config import ExtractConfig
from ..errors import DeviceUnavailableError
from ..photos.decoding import Decoder
from ..photos.images import ImageLoadError, load_tensor, pixels_to_tensor
from . import onnxbackbone
from .extraction import NON_FINITE, Extracted, extract_with
from .network import init_netvlad
from .runtime import backbone_precision

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device ``device`` names; one asked for that this machine lacks is a
    :class:`DeviceUnavailableError` (the user's to change), not torch's RuntimeError later."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, number = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "CUDA was asked for, but no CUDA GPU is available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if number.isdigit() and int(number) >= count:
            raise DeviceUnavailableError(
                f"{device} was asked for, but this machine has {count} CUDA GPU"
                f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            "mps (Apple GPU) was asked for, but it is not available here; use --device cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise DeviceUnavailableError(f"unknown device {device!r}; use auto, cpu or cuda") from exc


_PREPARED = "_netvlad_inference"  # marks a copy made by inference_model, with its switches


def inference_model(model: torch.nn.Module, cfg: ExtractConfig) -> torch.nn.Module:
    """The model as extraction runs it: eval mode, BatchNorm folded, in ``cfg``'s memory layout.

    Folding a BatchNorm into the conv before it gives the same fp32 map in one pass over memory
    instead of two, and NHWC lets oneDNN skip reorders: together 1.6x on MobileNetV2 here
    (benchmarks/README.md). With ``cfg.runtime == "onnxruntime"`` (CPU, fp32) ONNX Runtime runs
    the backbone (core/model/onnxbackbone.py). All act on a copy, so a model being trained is
    never altered; a copy made here is returned as is when passed again.
    """
    model.eval()
    ort = onnxbackbone.wanted(model, cfg)
    want = (cfg.fold_batchnorm, cfg.channels_last, ort)
    if getattr(model, _PREPARED, None) == want:
        return model
    if not any(want) and not isinstance(getattr(model, "backbone", None), onnxbackbone.OrtBackbone):
        return model
    net = copy.deepcopy(model)
    if ort:
        net.backbone = onnxbackbone.ort_backbone(net)
    elif hasattr(net, "backbone"):
        net.backbone = onnxbackbone.reference(net.backbone)
    if cfg.fold_batchnorm:
        fold_batchnorm(net)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    setattr(net, _PREPARED, want)
    return net


def fold_batchnorm(model: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential; the count.

    Sequentials hold the conv/BN pairs of torchvision's MobileNet, VGG-BN and ResNet downsample
    paths; pairs wired in a ``forward`` (ResNet's conv1/bn1) are left as they are.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if (
                isinstance(conv, torch.nn.Conv2d)
                and isinstance(bn, torch.nn.BatchNorm2d)
                and not (conv.training or bn.training)
                and bn.track_running_stats
            ):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = torch.nn.Identity()
                folded += 1
    return folded


def model_forward(
    model: torch.nn.Module,
    images: torch.Tensor,
    autocast: torch.dtype | None = None,
    *,
    pooled: bool = False,
) -> torch.Tensor:
    """A place model's descriptors with the backbone under ``autocast`` (when given) and the
    pooling and whitening in fp32 (``PlaceModel.describe``); ``pooled=True`` stops before
    whitening (what it is fitted on). Any other network runs as it is.
    """
    if not hasattr(model, "describe"):
        return model(images)
    return model.describe(images, autocast=autocast, whiten=not pooled).descriptors


class Forward(torch.nn.Module):
    """:func:`model_forward` as a module, so that DDP can wrap it and extraction can run it."""

    def __init__(
        self, model: torch.nn.Module, autocast: torch.dtype | None = None, pooled: bool = False
    ) -> None:
        super().__init__()
        self.model, self.autocast, self.pooled = model, autocast, pooled

    @property
    def dim(self) -> int:
        return self.model.pool_dim if self.pooled else self.model.dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return model_forward(self.model, images, self.autocast, pooled=self.pooled)


def autocast_dtype(cfg: ExtractConfig, device_type: str) -> torch.dtype | None:
    """The backbone's autocast type under ``cfg.precision`` on this device (None: fp32)."""
    return torch.bfloat16 if backbone_precision(cfg, device_type) == "bf16" else None


def describe_batch(
    model: torch.nn.Module, batch: torch.Tensor, cfg: ExtractConfig, *, with_map: bool = False
) -> tuple[np.ndarray, torch.Tensor | None]:
    """Descriptors (B, dim) float32 of a batch of images with ``cfg``'s switches (device, memory
    layout, precision) and, with ``with_map``, the backbone maps (B, D, H', W') float32 on the
    CPU, from the same forward pass, whatever the precision.

    Under ``bf16`` only the backbone runs in bfloat16 (``PlaceModel.describe``); a
    :class:`Forward` keeps its own precision and gives no maps.
    """
    device = next(model.parameters()).device
    batch = batch.to(device, non_blocking=True)
    if cfg.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    if isinstance(model, Forward) or not hasattr(model, "describe"):
        if with_map:
            raise TypeError(f"{type(model).__name__} gives no backbone maps")
        return model(batch).float().cpu().numpy(), None
    ort = isinstance(getattr(model, "backbone", None), onnxbackbone.OrtBackbone)
    autocast = None if ort else autocast_dtype(cfg, device.type)  # ONNX Runtime runs fp32
    out = model.describe(batch, with_map=with_map, autocast=autocast)
    maps = out.maps.cpu().contiguous() if out.maps is not None else None
    return out.descriptors.float().cpu().numpy(), maps


def forward(model: torch.nn.Module, batch: torch.Tensor, cfg: ExtractConfig) -> np.ndarray:
    """Descriptors (B, dim) float32 for a batch of images: :func:`describe_batch` without maps."""
    return describe_batch(model, batch, cfg)[0]


def iter_images(
    paths: Sequence[str | os.PathLike], cfg: ExtractConfig, decoder: Decoder | None = None
) -> Iterator[tuple[int, torch.Tensor | None, str]]:
    """(index, tensor or None, error) for each path, in order, decoded ahead in ``decoder``'s
    threads (a build's, which may have started while torch loaded) or in ``cfg.num_workers`` new
    ones.

    Every extraction (index builds, their initialisation, training's caches) passes here, so
    settings out of range are refused here with a ConfigError, before any work.
    """
    cfg.validate()
    own = decoder is None
    decoder = Decoder(cfg) if own else decoder
    try:
        for i, pixels, err in decoder.decoded(paths):
            yield i, (None if pixels is None else pixels_to_tensor(pixels)), err
    finally:
        if own:
            decoder.close()


def extract(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    cfg: ExtractConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    decoder: Decoder | None = None,
) -> Iterator[Extracted]:
    """Yield one ``Extracted`` per path (in completion order, not input order): the loop of
    ``extraction.extract_with`` with ``model`` run by torch (``TorchModel``).

    A photo whose descriptor is not finite comes back without one, with the reason
    (``NON_FINITE``), so that no caller ever stores it.

    Raises ``Cancelled`` between batches when ``cancel()`` turns true; results already yielded
    stay valid. ``decoder``: see :func:`iter_images`.
    """
    cfg = cfg or ExtractConfig()
    net = TorchModel(model, cfg)
    yield from extract_with(net, paths, cfg, progress=progress, cancel=cancel, decoder=decoder)


# -- a torch network as an InferenceModel ------------------------------------------------------
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


def extract_one(model: torch.nn.Module, path: str | os.PathLike, cfg: ExtractConfig | None = None):
    """The descriptor of a single photo, decoded in this thread (the warm locate path).

    Pass the model through ``inference_model`` once beforehand to avoid a copy per photo. A
    non-finite descriptor raises ImageLoadError with the reason, like an unreadable photo.
    """
    cfg = (cfg or ExtractConfig()).validate()
    tensor = load_tensor(Path(path), cfg.image_size, cfg.max_pixels, draft=cfg.jpeg_draft)
    net = inference_model(model, cfg)
    with torch.inference_mode():
        desc = forward(net, tensor.unsqueeze(0), cfg)[0]
    if not np.isfinite(desc).all():
        raise ImageLoadError(NON_FINITE)
    return desc
