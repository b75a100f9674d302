"""Read trained NetVLAD models that people already have into a :class:`PlaceModel`.

Three foreign formats are understood, besides our own checkpoints:

* the paper's MATLAB models (``Pitts30K_struct.mat``, ``TokyoTM_struct.mat``): MatConvNet
  ``simplenn`` nets whose custom layers were turned into plain structs (uzh-rpg/netvlad_tf_open),
  the files hloc downloads;
* Nanne/pytorch-NetVlad ``checkpoint.pth.tar`` (VGG16 or AlexNet encoder + NetVLAD);
* Patch-NetVLAD ``*_WPCA*.pth.tar`` (the same, plus a PCA-whitening 1x1 conv ``WPCA.0``).

Every reader turns the file into our state-dict layout and loads it with ``strict=True``, so
a file that does not match the network it claims to be fails loudly instead of half-loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from .backbones import IMAGENET, Normalization, code_refusal, describe_load_error
from .checkpoint import (
    FORMAT as NATIVE_FORMAT,
)
from .checkpoint import (
    CheckpointError,
    ForeignCheckpointError,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from .network import PlaceModel, build_model

FORMAT_NATIVE = NATIVE_FORMAT  # "netvlad-gui"
FORMAT_MATLAB = "matlab"
FORMAT_NANNE = "pytorch-netvlad"
FORMAT_PATCH = "patch-netvlad"

_MAT5_MAGIC = b"MATLAB 5.0 MAT-file"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"

# torchvision vgg16 ``features[:-2]`` (conv1_1 .. conv5_3, no last ReLU / pool), as MatConvNet
# lays it out too: ("conv", in, out) | ("relu",) | ("pool",).
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg16_layout() -> list[tuple]:
    layers: list[tuple] = []
    in_ch = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(("pool",))
        else:
            layers += [("conv", in_ch, item), ("relu",)]
            in_ch = item
    return layers[:-1]


VGG16_LAYOUT = _vgg16_layout()  # 29 entries, indices 0..28


@dataclass
class MatlabInfo:
    """What a quick structure check of a paper ``.mat`` found."""

    backbone: str
    num_clusters: int
    dim: int
    whitening_dim: int | None


@dataclass
class _Imported:
    """A foreign file translated to our keys, before it becomes a model."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    normalization: Normalization
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """The format of ``path``: one of the ``FORMAT_*`` names; raises CheckpointError if none."""
    return _inspect(Path(path))[0]


def _inspect(path: Path) -> tuple[str, Any]:
    """(format, the loaded object for foreign PyTorch files else None)."""
    head = _read_head(path, 1024)
    if head.startswith(_MAT5_MAGIC):
        return FORMAT_MATLAB, None
    if head.startswith(b"MATLAB 7.3") or head[512:520] == _HDF5_MAGIC:
        raise CheckpointError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it in MATLAB with "
            "save(..., '-v7') or use the *_struct.mat files hloc downloads"
        )
    _torch_magic(path, head)
    native_error: CheckpointError | None = None
    try:
        read_checkpoint_header(path)  # cheap: memory-maps the weights
        return FORMAT_NATIVE, None
    except ForeignCheckpointError:
        pass
    except CheckpointError as exc:  # damaged, or a foreign file holding numpy scalars
        native_error = exc
    obj = _torch_load(path)
    fmt = _torch_format(obj, path)
    if fmt == FORMAT_NATIVE:
        raise native_error or CheckpointError(f"{path}: unreadable netvlad-gui checkpoint")
    return fmt, obj


def _read_head(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as f:
            head = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a model file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    return head


def _torch_format(obj: Any, path: Path) -> str:
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: not a model checkpoint (the file holds a {type(obj).__name__}, not a dict)"
        )
    if _is_native(obj):
        return FORMAT_NATIVE
    state = _state_dict_of(obj, path)
    keys = {_strip_module(k) for k in state}
    if not any(k.startswith("encoder.") for k in keys) or "pool.centroids" not in keys:
        raise CheckpointError(
            f"{path}: not a NetVLAD checkpoint this app knows (expected encoder.* and "
            f"pool.centroids keys as pytorch-NetVlad writes them; found {_few(sorted(keys))})"
        )
    return FORMAT_PATCH if any(k.startswith("WPCA.") for k in keys) else FORMAT_NANNE


def _is_native(obj: dict) -> bool:
    return obj.get("format") == NATIVE_FORMAT


def _few(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", … ({len(items)} in all)" if len(items) > n else "") if items else "none"


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load_any(path: str | Path) -> PlaceModel:
    """Load a model from our checkpoint, a paper ``.mat``, or a pytorch-NetVlad/Patch-NetVLAD file."""
    path = Path(path)
    fmt, obj = _inspect(path)
    if fmt == FORMAT_NATIVE:
        return load_checkpoint(path)
    imported = _read_matlab(path) if fmt == FORMAT_MATLAB else _read_pytorch(path, obj)
    return _to_model(imported, path)


def import_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Convert any supported model file into our checkpoint format at ``out``; returns ``out``."""
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise CheckpointError(
            f"{src}: import would overwrite its own source; choose another output"
        )
    model = load_any(src)
    save_checkpoint(model, out)
    return out


def read_matlab_info(path: str | Path) -> MatlabInfo:
    """Quick structure check of a paper ``.mat`` (used after a download); raises CheckpointError."""
    path = Path(path)
    net = _load_mat_net(path)
    layout = _parse_matlab(net, path)
    return MatlabInfo(
        backbone="vgg16",
        num_clusters=layout.num_clusters,
        dim=layout.dim,
        whitening_dim=None if layout.whiten is None else int(layout.whiten[0].shape[-1]),
    )


def _to_model(imp: _Imported, path: Path) -> PlaceModel:
    """Build the network the file describes and load the translated weights into it, strictly."""
    model = build_model(
        imp.config, "none", normalization=imp.normalization, padding="torch", progress=False
    )
    state = model.state_dict()
    wanted = {k for k in state if k.startswith(("backbone.", "pool.", "whiten."))}
    wanted.discard("pool.initialised")
    missing = sorted(wanted - imp.state.keys())
    extra = sorted(imp.state.keys() - wanted)
    if missing or extra:
        raise CheckpointError(
            f"{path}: weights do not match a {imp.config.name} network "
            f"(missing: {_few(missing)}; unexpected: {_few(extra)})"
        )
    for key, value in imp.state.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, a {imp.config.name} network "
                f"needs {tuple(state[key].shape)}"
            )
        # A finite sum proves every value finite, ~30x faster than isfinite on the 134 M
        # whitening weights; only an infinite sum (NaN, inf or overflow) needs the full check.
        if not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {key} contains NaN or infinity")
        state[key] = value.to(state[key].dtype)
    state["pool.initialised"] = torch.tensor(True)
    model.load_state_dict(state, strict=True)
    model.meta.update(imp.meta)
    model.meta["backbone_weights"] = f"{imp.meta['source_format']}:{path.name}"
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# The paper's MATLAB models
# --------------------------------------------------------------------------------------------


@dataclass
class _MatLayout:
    convs: dict[int, tuple[np.ndarray, np.ndarray]]  # torchvision index -> (S,S,IN,OUT), (OUT,)
    assign: np.ndarray  # (D, K)
    neg_centroids: np.ndarray  # (D, K), MATLAB stores -c
    whiten: tuple[np.ndarray, np.ndarray] | None  # (K*D, OUT) D-major input, (OUT,)
    average_rgb: np.ndarray  # (3,), 0-255
    num_clusters: int
    dim: int


def _load_mat_net(path: Path) -> Any:
    import scipy.io

    _read_head(path, 1)
    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except NotImplementedError:  # v7.3
        raise CheckpointError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')"
        ) from None
    except Exception as exc:  # scipy raises many types for a damaged file
        raise CheckpointError(
            f"{path}: cannot read the .mat file (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc
    net = mat.get("net")
    if net is None or not hasattr(net, "layers"):
        raise CheckpointError(
            f"{path}: no MatConvNet 'net' struct with 'layers' in this .mat (variables: "
            f"{_few(sorted(k for k in mat if not k.startswith('__')))}); the paper's models must "
            "be the *_struct.mat exports (custom layers saved as structs)"
        )
    return net


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    return getattr(obj, name, default) if hasattr(obj, "_fieldnames") else default


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _weights(layer: Any) -> list[np.ndarray]:
    w = _attr(layer, "weights")
    if w is None:
        return []
    if isinstance(w, np.ndarray) and w.dtype == object:
        return [np.asarray(x) for x in w.ravel()]
    w = np.asarray(w)
    return [] if w.size == 0 else [w]  # a 1x1 cell is squeezed to its content


def _layer_desc(i: int, layer: Any) -> str:
    name, kind = _text(_attr(layer, "name")), _text(_attr(layer, "type"))
    return f"layer {i}" + (f" ({name}, {kind})" if name or kind else "")


def _parse_matlab(net: Any, path: Path) -> _MatLayout:
    layers = net.layers
    layers = list(np.atleast_1d(layers)) if isinstance(layers, np.ndarray) else [layers]
    n_backbone = len(VGG16_LAYOUT)
    if len(layers) < n_backbone + 2:
        raise CheckpointError(
            f"{path}: the net has {len(layers)} layers; a VGG16 NetVLAD model has at least "
            f"{n_backbone + 2} (conv1_1 .. conv5_3, L2, NetVLAD)"
        )

    def bad(i: int, what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {_layer_desc(i, layers[i])}: {what}")

    convs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, spec in enumerate(VGG16_LAYOUT):
        layer = layers[i]
        kind = _text(_attr(layer, "type"))
        if kind is not None and kind != spec[0]:
            raise bad(i, f"expected a VGG16 {spec[0]} layer here, found type {kind!r}")
        weights = _weights(layer)
        if spec[0] != "conv":
            if weights:
                raise bad(i, f"a {spec[0]} layer should have no weights")
            continue
        if len(weights) != 2:
            raise bad(i, f"a conv layer needs weights and biases, found {len(weights)} arrays")
        w, b = weights
        if w.shape != (3, 3, spec[1], spec[2]) or b.size != spec[2]:
            raise bad(
                i,
                f"conv weights {w.shape} / bias {b.shape} do not match VGG16's "
                f"(3, 3, {spec[1]}, {spec[2]}); only VGG16 .mat models are supported",
            )
        for field_name, want in (("pad", 1), ("stride", 1)):
            value = _attr(layer, field_name)
            if value is not None and not np.all(np.asarray(value) == want):
                raise bad(i, f"{field_name} is {np.asarray(value).tolist()}, VGG16 uses {want}")
        convs[i] = (w, b.reshape(-1))
    dim = VGG16_LAYOUT[-1][2]

    # NetVLAD core: the first layer after the backbone that has two weight arrays.
    vlad_idx = next(
        (i for i in range(n_backbone, len(layers)) if len(_weights(layers[i])) == 2), None
    )
    if vlad_idx is None:
        raise CheckpointError(f"{path}: no NetVLAD layer (assignment + centroids) after conv5_3")
    vlad = layers[vlad_idx]
    name = _text(_attr(vlad, "name")) or ""
    if name and "vlad" not in name.lower():
        raise bad(vlad_idx, "expected the NetVLAD layer (vlad:core) here")
    assign, neg_centroids = (np.squeeze(a) for a in _weights(vlad))
    if assign.ndim == 1:  # K == 1 squeezed away
        assign, neg_centroids = assign[:, None], neg_centroids.reshape(-1, 1)
    if assign.ndim != 2 or assign.shape[0] != dim or neg_centroids.shape != assign.shape:
        raise bad(
            vlad_idx,
            f"assignment {assign.shape} and centroids {neg_centroids.shape} must both be "
            f"(D={dim}, K)",
        )
    k = assign.shape[1]
    k_field = _attr(vlad, "K")
    if k_field is not None and np.size(k_field) == 1 and int(np.asarray(k_field)) != k:
        raise bad(vlad_idx, f"K field says {int(np.asarray(k_field))}, weights have {k} clusters")

    whiten = None
    for i in range(vlad_idx + 1, len(layers)):
        weights = _weights(layers[i])
        if not weights:
            continue
        kind = _text(_attr(layers[i], "type"))
        if (kind is not None and kind != "conv") or len(weights) != 2:
            raise bad(i, "expected the whitening (WPCA) conv layer: weights and bias")
        w, b = np.asarray(weights[0]), np.asarray(weights[1]).reshape(-1)
        w = w.reshape(-1, w.shape[-1]) if w.ndim >= 2 else w.reshape(-1, 1)
        if w.shape[0] != k * dim or w.shape[1] != b.size or w.shape[1] > k * dim:
            raise bad(
                i,
                f"whitening weights {w.shape} / bias {b.shape} do not fit a {k * dim}-D NetVLAD "
                "descriptor",
            )
        whiten = (w, b)
        break

    average = _attr(_attr(_attr(net, "meta"), "normalization"), "averageImage")
    average = None if average is None else np.asarray(average, dtype=np.float64)
    if average is None or average.size == 0 or average.size % 3 or average.shape[-1] != 3:
        raise CheckpointError(
            f"{path}: net.meta.normalization.averageImage (the RGB mean to subtract) is missing "
            "or not per-channel"
        )
    # MATLAB subtracts averageImage(1,1,:), as hloc and netvlad_tf_open do: the first pixel,
    # not the mean over all pixels (the two agree only for the published, constant images).
    average_rgb = average.reshape(-1, 3)[0]
    return _MatLayout(convs, assign, neg_centroids, whiten, average_rgb, k, dim)


def _read_matlab(path: Path) -> _Imported:
    layout = _parse_matlab(_load_mat_net(path), path)
    k, d = layout.num_clusters, layout.dim
    state: dict[str, torch.Tensor] = {}
    for i, (w, b) in layout.convs.items():
        # MatConvNet H x W x IN x OUT -> PyTorch OUT x IN x H x W (both cross-correlate).
        state[f"backbone.{i}.weight"] = _f32(w.transpose(3, 2, 0, 1))
        state[f"backbone.{i}.bias"] = _f32(b)
    state["pool.centroids"] = _f32(-layout.neg_centroids.T)
    state["pool.conv.weight"] = _f32(layout.assign.T).reshape(k, d, 1, 1)
    state["pool.conv.bias"] = torch.zeros(k)
    whitening_dim = None
    if layout.whiten is not None:
        w, b = layout.whiten
        out = w.shape[1]
        # MATLAB flattens the VLAD D-major (d*K + k); ours is K-major (k*D + d). Permuting the
        # whitening's input columns makes the two exactly equal, since the normalisations before
        # it do not depend on the order.
        state["whiten.weight"] = _f32(w.T.reshape(out, d, k).transpose(0, 2, 1)).reshape(out, k * d)
        state["whiten.bias"] = _f32(b)
        whitening_dim = out
    avg = layout.average_rgb
    normalization = Normalization(
        mean=tuple(float(v) / 255.0 for v in avg), std=(1 / 255.0, 1 / 255.0, 1 / 255.0)
    )
    config = ModelConfig(
        backbone="vgg16", pooling="netvlad", num_clusters=k, whitening_dim=whitening_dim
    )
    meta = {
        "source": str(path),
        "source_format": FORMAT_MATLAB,
        "source_name": path.name,
        "average_rgb": [round(float(v), 4) for v in avg],
    }
    return _Imported(config, state, normalization, meta)


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# pytorch-NetVlad and Patch-NetVLAD
# --------------------------------------------------------------------------------------------


def _numpy_safe_globals() -> list:
    """numpy scalars the PyTorch ports pickle next to the weights (``best_score`` is a float64)."""
    allowed: list = [np.dtype]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed += [scalar, (scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def _torch_magic(path: Path, head: bytes) -> None:
    if not (head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path}: not a model file this app reads (neither a PyTorch checkpoint nor a "
            "MATLAB .mat)"
        )


def _torch_load(path: Path) -> Any:
    head = _read_head(path, 8)
    _torch_magic(path, head)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=head.startswith(_ZIP_MAGIC)
            )
    except torch.serialization.pickle.UnpicklingError as exc:
        reason = code_refusal(exc) or f"damaged file ({describe_load_error(exc)[:200]})"
        raise CheckpointError(f"{path}: refused to load: {reason}") from None
    except Exception as exc:
        if "not resizable" in str(exc):  # compressed entries: see backbones._load_mapped
            raise CheckpointError(f"{path}: refused: {describe_load_error(exc)}") from None
        raise CheckpointError(
            f"{path}: cannot read the PyTorch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


def _strip_module(key: str) -> str:
    """``module.`` segments come from nn.DataParallel (pytorch-NetVlad wraps encoder and pool)."""
    parts = [p for p in key.split(".") if p != "module"]
    return ".".join(parts)


def _state_dict_of(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    state = obj.get(
        "state_dict", obj if all(isinstance(v, torch.Tensor) for v in obj.values()) else None
    )
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            f"{path}: no 'state_dict' in the checkpoint (keys: {_few(sorted(map(str, obj)))})"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {_few(bad)}")
    return state


def _guess_backbone(state: dict[str, torch.Tensor], path: Path) -> str:
    first = state.get("backbone.0.weight")
    shape = None if first is None else tuple(first.shape)
    if shape == (64, 3, 3, 3):
        return "vgg16"
    if shape == (64, 3, 11, 11):
        return "alexnet"
    raise CheckpointError(
        f"{path}: encoder is neither VGG16 nor AlexNet (first conv {shape}); pytorch-NetVlad "
        "checkpoints use one of those two"
    )


def _read_pytorch(path: Path, obj: Any = None) -> _Imported:
    obj = _torch_load(path) if obj is None else obj
    fmt = _torch_format(obj, path)
    raw = _state_dict_of(obj, path)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        key = _strip_module(key)
        if key.startswith("encoder."):
            key = "backbone." + key[len("encoder.") :]
        elif key == "WPCA.0.weight":
            value = value.reshape(value.shape[0], -1)
            key = "whiten.weight"
        elif key == "WPCA.0.bias":
            key = "whiten.bias"
        state[key] = value.detach().float()
    centroids = state["pool.centroids"]
    if centroids.ndim != 2:
        raise CheckpointError(
            f"{path}: pool.centroids has shape {tuple(centroids.shape)}, not (K, D)"
        )
    k, d = centroids.shape
    if "pool.conv.weight" not in state:
        raise CheckpointError(f"{path}: no pool.conv.weight (NetVLAD assignment) in the state_dict")
    state.setdefault("pool.conv.bias", torch.zeros(k))  # vladv1: no bias
    whitening_dim = None
    if "whiten.weight" in state:
        w = state["whiten.weight"]
        if w.ndim != 2 or w.shape[1] != k * d or "whiten.bias" not in state:
            raise CheckpointError(
                f"{path}: WPCA.0.weight {tuple(w.shape)} does not take a {k * d}-D NetVLAD "
                "descriptor, or WPCA.0.bias is missing"
            )
        whitening_dim = int(w.shape[0])
    config = ModelConfig(
        backbone=_guess_backbone(state, path),
        pooling="netvlad",
        num_clusters=int(k),
        whitening_dim=whitening_dim,
    )
    meta: dict[str, Any] = {"source": str(path), "source_format": fmt, "source_name": path.name}
    for key in ("epoch", "best_score"):
        value = obj.get(key)
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            value = value.item() if isinstance(value, np.number) else value
            if math.isfinite(value):
                meta[f"source_{key}"] = value
    return _Imported(config, state, IMAGENET, meta)
