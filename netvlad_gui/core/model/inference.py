"""What the library and the query layer run a model through, whichever engine runs it.

An :class:`InferenceModel` takes photo pixels as the decoder gives them ((B, H, W, 3) uint8, one
size per batch) and gives numpy arrays: global descriptors, backbone maps (verification's patch
features, the one-pass initialisation) and the head applied to kept maps. Two engines implement
it: :class:`~netvlad_gui.core.model.ortmodel.OrtModel` (ONNX Runtime + numpy, no torch) and
:class:`~netvlad_gui.core.model.features.TorchModel` (torch, any device and precision).
:func:`open_model` picks by the job's :class:`~netvlad_gui.core.model.runtime.Engine` and
imports torch only when torch runs it, or when a graph must be exported first.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import ExtractConfig
from .ckptfile import CheckpointFormatError
from .runtime import ONNXRUNTIME, TORCH, Engine

log = logging.getLogger(__name__)

StageProgress = Callable[[str, int, int], None]


@runtime_checkable
class InferenceModel(Protocol):
    """A place model ready to describe photos, numpy in and out."""

    runtime: str  # "onnxruntime" or "torch"
    precision: str  # "fp32" or "bf16"

    @property
    def dim(self) -> int: ...

    @property
    def local_dim(self) -> int: ...

    def describe_pixels(
        self, pixels: np.ndarray, *, with_map: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Descriptors (B, dim) float32 and, ``with_map``, maps (B, D, h, w) float32."""
        ...

    def maps_of(self, pixels: np.ndarray) -> np.ndarray:
        """Backbone maps (B, D, h, w) float32."""
        ...

    def pool_maps(self, maps: np.ndarray) -> np.ndarray:
        """The head on backbone maps: descriptors (B, dim) float32."""
        ...


def is_inference_model(model) -> bool:
    return hasattr(model, "describe_pixels") and hasattr(model, "maps_of")


def as_inference_model(model, cfg: ExtractConfig | None = None) -> InferenceModel:
    """``model`` itself when it is an InferenceModel; a torch network wrapped as one."""
    if is_inference_model(model):
        return model
    from .features import TorchModel

    return TorchModel(model, cfg or ExtractConfig())


def torch_config(cfg: ExtractConfig, engine: Engine) -> ExtractConfig:
    """``cfg`` for torch with the engine's precision (an index's fp32 stays fp32 in torch)."""
    return dataclasses.replace(cfg, precision=engine.precision, bf16=False, runtime=TORCH)


def open_model(
    path: str | os.PathLike,
    cfg: ExtractConfig,
    engine: Engine,
    *,
    progress: StageProgress | None = None,
) -> InferenceModel:
    """The checkpoint at ``path`` ready to describe photos with ``engine``.

    ONNX Runtime: the checkpoint is read without torch and its cached graph used (exported
    first, with torch, when missing or damaged). A checkpoint this reader cannot take (torch's
    old non-zip format) is run by torch instead, saying so.
    """
    if engine.runtime == ONNXRUNTIME:
        from .graphs import ort_model
        from .ortmodel import ModelFile, OnnxExportError, OnnxRuntimeMissing

        try:
            return ort_model(ModelFile.read(path), progress=progress)
        except CheckpointFormatError as exc:
            log.warning("%s; torch runs this model", exc)
        except (OnnxExportError, OnnxRuntimeMissing) as exc:
            if cfg.runtime == ONNXRUNTIME:
                raise
            log.warning("%s; torch runs this model", exc)  # --runtime auto: never stuck
    return torch_model(path, cfg, engine)


def torch_model(path: str | os.PathLike, cfg: ExtractConfig, engine: Engine) -> InferenceModel:
    """The checkpoint at ``path`` run by torch (imported now) with ``engine``'s precision."""
    from .engine import load_engine

    load_engine()
    from .checkpoint import load_checkpoint
    from .features import TorchModel, resolve_device

    model = load_checkpoint(Path(path)).to(resolve_device(cfg.device))
    return TorchModel(model, torch_config(cfg, engine))
