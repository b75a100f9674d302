"""The model run without torch: the backbone by ONNX Runtime, its head in numpy.

A model's inference graph (photo pixels -> backbone maps; the input normalisation inside) is
exported once per backbone weights into the user cache (core/model/graphs.py), with torch; from
then on a checkpoint is read without torch (core/model/ckptfile.py), its graph found by a hash
of its backbone's arrays, and its NetVLAD/f_max pooling and whitening computed in numpy
(core/model/head.py). ``import onnxruntime`` + the session take ~0.3 s where torch and
torchvision take 2-4 s, and ONNX Runtime ran the default backbone 1.3-1.8x faster than torch
(benchmarks/README.md, "Which engine runs").
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, NetvladError
from . import ckptfile
from .head import Head, kmeans_netvlad

log = logging.getLogger(__name__)

INSTALL = 'pip install "netvlad-gui[onnx]"'
OPSET = 17  # ONNX opset of every export
INPUT, OUTPUT = "pixels", "maps"  # the graph's input (B, H, W, 3) uint8 and output (B, D, h, w)


class OnnxRuntimeMissing(NetvladError, ImportError):
    """runtime="onnxruntime" without the onnx / onnxruntime packages."""


class OnnxExportError(NetvladError, RuntimeError):
    """An exported backbone that does not give torch's feature maps."""


def require_modules(*names: str) -> tuple:
    """The modules named (``onnx``, ``onnxruntime``), or OnnxRuntimeMissing saying how to install
    the one missing."""
    try:
        return tuple(importlib.import_module(name) for name in names)
    except ImportError as exc:
        raise OnnxRuntimeMissing(
            f"--runtime onnxruntime needs the onnx and onnxruntime packages ({exc.name} is "
            f"missing): {INSTALL}, or use --runtime torch"
        ) from None


def require_ort():
    """The ``onnxruntime`` module, or OnnxRuntimeMissing saying how to install it."""
    return require_modules("onnxruntime")[0]


def installed_version() -> str | None:
    """onnxruntime's version, or None when it is not installed."""
    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return None


def cpu_threads() -> int:
    """The cores this process may use (what torch's default thread count is here)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def make_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session: all graph optimisations, one thread per core, no spinning.

    Idle threads sleep instead of spinning, as torch's OpenMP threads do here (tune_process):
    on a machine whose cores are shared, spinning steals them from the working threads.
    """
    ort = require_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or cpu_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def shared_session(path: str, threads: int, mtime_ns: int):
    """One session per graph file (as it is on disk now); sessions are safe to share."""
    return make_session(path, threads)


class ModelFile:
    """A netvlad-gui checkpoint read without torch: its header and its state (numpy arrays).

    ``path`` is where it was read from (None for one made in memory). Changes to the state (a new
    model's NetVLAD initialisation) are written with :meth:`write`.
    """

    def __init__(self, header: dict[str, Any], state: dict[str, np.ndarray], path=None) -> None:
        self.header, self.state, self.path = header, state, path
        self._sha: str | None = None

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelFile:
        """Raises ckptfile.CheckpointFormatError for anything but a netvlad-gui checkpoint that
        this reader takes (the caller loads it with torch, which says what is wrong)."""
        obj = ckptfile.read(path)
        if not isinstance(obj, dict) or obj.get("format") != "netvlad-gui":
            raise ckptfile.CheckpointFormatError(f"{path}: not a netvlad-gui checkpoint")
        if not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("config"), dict):
            raise ckptfile.CheckpointFormatError(f"{path}: a checkpoint without its model")
        state = obj.pop("state_dict")
        return cls(obj, state, Path(path))

    @property
    def config(self) -> dict[str, Any]:
        return self.header["config"]

    @property
    def backbone(self) -> str:
        return str(self.config.get("backbone", ""))

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.setdefault("meta", {})

    @property
    def is_initialised(self) -> bool:
        if self.config.get("pooling", "netvlad") != "netvlad":
            return True
        flag = self.state.get("pool.initialised")
        return bool(flag) if flag is not None else False

    def state_sha(self) -> str:
        """``index.model_state_sha`` of this model (cached until the state changes)."""
        if self._sha is None:
            self._sha = ckptfile.state_sha(self.state)
        return self._sha

    def write(self, path: str | os.PathLike) -> None:
        """Save as checkpoint.save_checkpoint would (a file torch.load reads)."""
        ckptfile.write(path, {**self.header, "state_dict": self.state})

    def set_netvlad(self, centroids: np.ndarray, weight: np.ndarray) -> None:
        """The NetVLAD layer's k-means initialisation (``NetVLAD.set_clusters``: no bias)."""
        k, d = centroids.shape
        self.state["pool.centroids"] = np.asarray(centroids, dtype=np.float32)
        self.state["pool.conv.weight"] = np.asarray(weight, np.float32).reshape(k, d, 1, 1)
        self.state["pool.conv.bias"] = np.zeros(k, np.float32)
        self.state["pool.initialised"] = np.array(True)
        self._sha = None


class OrtModel:
    """An :class:`~netvlad_gui.core.model.inference.InferenceModel` run by ONNX Runtime (CPU,
    fp32): photo pixels in, numpy descriptors and backbone maps out; no torch."""

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, session, file: ModelFile, graph: Path) -> None:
        self.session, self.file, self.graph = session, file, graph
        self.local_dim = int(session.get_outputs()[0].shape[1])
        self._head = Head.from_state(file.config, file.state, self.local_dim)

    @property
    def dim(self) -> int:
        return self._head.dim

    @property
    def backbone(self) -> str:
        return self.file.backbone

    @property
    def num_clusters(self) -> int:
        return int(self.file.config.get("num_clusters", 0) or 0)

    @property
    def is_initialised(self) -> bool:
        return self.file.is_initialised

    def state_sha(self) -> str:
        return self.file.state_sha()

    def maps_of(self, pixels: np.ndarray) -> np.ndarray:
        """Backbone maps (B, D, h, w) float32 of photos (B, H, W, 3) uint8 of one size."""
        x = np.ascontiguousarray(pixels, dtype=np.uint8)
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def pool_maps(self, maps: np.ndarray) -> np.ndarray:
        """Global descriptors (B, dim) of backbone maps: the head, in numpy."""
        return self._head(maps)

    def describe_pixels(
        self, pixels: np.ndarray, *, with_map: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Descriptors (B, dim) and, ``with_map``, the backbone maps: one forward pass."""
        maps = self.maps_of(pixels)
        return self._head(maps), (maps if with_map else None)

    @property
    def meta(self) -> dict[str, Any]:
        return self.file.meta

    def init_netvlad(self, samples: np.ndarray, init_cfg) -> float:
        """k-means on sampled local descriptors sets the NetVLAD layer, recorded in the meta as
        ``network.init_netvlad`` does; returns alpha."""
        if self.file.config.get("pooling", "netvlad") != "netvlad":
            raise ConfigError(f"{self.backbone}: only NetVLAD pooling needs initialisation")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.local_dim:
            raise ValueError(
                f"NetVLAD init expects descriptors of shape (N, {self.local_dim}), got {x.shape}"
            )
        k = self.num_clusters
        centroids, weight, alpha = kmeans_netvlad(
            x, k, iters=init_cfg.kmeans_iters, seed=init_cfg.seed
        )
        self.file.set_netvlad(centroids, weight)
        self._head = Head.from_state(self.file.config, self.file.state, self.local_dim)
        self.meta["netvlad_alpha"] = alpha
        self.meta["netvlad_init"] = dataclasses.asdict(init_cfg) | {"num_descriptors": len(x)}
        return alpha
