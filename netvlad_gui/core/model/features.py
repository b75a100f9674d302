"""Batched descriptor extraction: decode in threads ahead of use, forward under inference_mode.

Extraction yields results as they come so that the index can stream them to disk, and a bad
image is reported and skipped instead of ending the run.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..cancel import Cancelled
from ..config import ExtractConfig
from ..errors import NetvladError
from ..photos.decoding import Decoder
from ..photos.images import ImageLoadError, batched_by_shape, load_tensor, pixels_to_tensor
from . import onnxbackbone
from .runtime import backbone_precision

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


#: Why a photo whose descriptor holds NaN or inf is skipped: such a row would never match in a
#: search (nor let others match), so it is never stored; the model is the usual cause.
NON_FINITE = (
    "the model gave a non-finite descriptor (NaN or inf); photo skipped (damaged model weights?)"
)


class DeviceUnavailableError(NetvladError, RuntimeError):
    """The device asked for is not on this machine (``--device cuda`` without a GPU)."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "CUDA was asked for, but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(device)


@dataclass
class Extracted:
    """One image's outcome: a descriptor, or the reason there is none."""

    index: int
    descriptor: np.ndarray | None
    error: str = ""


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
    pooling and whitening in fp32; ``pooled=True`` stops before whitening (what it is fitted on).

    NetVLAD subtracts the soft-assigned centroids from the summed features; in low precision that
    small residual drowns in rounding (descriptors of a trained model collapse), so it never runs
    in reduced precision, even inside a caller's autocast region.
    """
    if not hasattr(model, "local_features"):  # any other network: as it is
        return model(images)
    if autocast is None and not pooled:
        return model(images)
    kind = images.device.type
    if autocast is None:
        feats = model.local_features(images)
    else:
        with torch.autocast(kind, dtype=autocast):
            feats = model.local_features(images)
    full = torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else nullcontext()
    with full:
        x = model.pool(feats.float())
        if not pooled and getattr(model, "whiten", None) is not None:
            x = model.whiten(x)
    return x


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


def forward(model: torch.nn.Module, batch: torch.Tensor, cfg: ExtractConfig) -> np.ndarray:
    """Descriptors (B, dim) float32 for a batch of images, with ``cfg``'s speed switches.

    Under ``bf16`` only the backbone runs in bfloat16 (see :func:`model_forward`); a
    :class:`Forward` keeps its own precision.
    """
    device = next(model.parameters()).device
    batch = batch.to(device, non_blocking=True)
    if cfg.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    if backbone_precision(cfg, device.type) == "bf16" and not isinstance(model, Forward):
        return model_forward(model, batch, torch.bfloat16).float().cpu().numpy()
    return model(batch).float().cpu().numpy()


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
    """Yield one ``Extracted`` per path (in completion order, not input order).

    A photo whose descriptor is not finite comes back without one, with the reason
    (``NON_FINITE``), so that no caller ever stores it.

    Raises ``Cancelled`` between batches when ``cancel()`` turns true; results already yielded
    stay valid. ``decoder``: see :func:`iter_images`.
    """
    cfg = cfg or ExtractConfig()
    net = inference_model(model, cfg)
    total, done = len(paths), 0

    def good_images():
        nonlocal done
        for i, tensor, err in iter_images(paths, cfg, decoder):
            if cancel is not None and cancel():
                raise Cancelled()
            if tensor is None:
                failures.append(Extracted(int(i), None, err))
                continue
            yield int(i), tensor

    failures: list[Extracted] = []
    with torch.inference_mode():
        for idxs, batch in batched_by_shape(good_images(), cfg.batch_size):
            while failures:
                done += 1
                yield failures.pop(0)
            desc = forward(net, batch, cfg)
            finite = np.isfinite(desc).all(axis=1)
            for i, d, ok in zip(idxs, desc, finite, strict=True):
                done += 1
                yield Extracted(i, d) if ok else Extracted(i, None, NON_FINITE)
            if progress is not None:
                progress(done + len(failures), total)
            if cancel is not None and cancel():
                raise Cancelled()
    for f in failures:
        done += 1
        yield f
    if progress is not None:
        progress(done, total)


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
