"""The CNNs that produce local descriptors, cut at their last useful conv layer, and their weights.

A backbone is an ``nn.Sequential`` whose child names match torchvision's, so state-dict keys read
``backbone.28.weight`` (VGG16 conv5_3), ``backbone.0.0.weight`` (MobileNetV2) or
``backbone.layer4.…`` (ResNet) and weights converted from other code bases map one to one.

Weights come from one of:
- ``None``: the default — the shipped MobileNetV2 file for ``mobilenet_v2``, torchvision's
  ImageNet weights (downloaded once into torch's cache) for the others;
- ``"torchvision"``: torchvision's ImageNet weights for any backbone;
- a path: a torchvision-layout state dict of the *full* torchvision model, with an optional JSON
  sidecar (same stem) giving ``padding`` and ``normalize`` (weights from other frameworks need both);
- ``"none"``: random weights (tests, and importers that overwrite everything).
Missing weights raise :class:`WeightsUnavailableError`; nothing ever falls back to random weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.error
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from netvlad_gui.core import paths
from netvlad_gui.core.errors import NetvladError, WeightsUnavailableError
from netvlad_gui.core.paths import SHIPPED_WEIGHTS

#: Valid values of ``padding``: torchvision's symmetric padding, or TensorFlow's "SAME".
PADDINGS = ("torch", "tf_same")

RANDOM_WEIGHTS = "none"
TORCHVISION_WEIGHTS = "torchvision"


class BackboneError(NetvladError, ValueError):
    """A backbone name, weights file or sidecar that cannot be used."""


@dataclass
class Normalization:
    """Per-channel ``(x - mean) / std`` on RGB in [0, 1], as the weights were trained.

    MATLAB models that subtract an average image on 0-255 are ``mean=avg/255, std=1/255``.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise BackboneError(
                f"normalisation needs 3 means and 3 stds, got {self.mean}, {self.std}"
            )
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise BackboneError(f"normalisation std must be positive, got {self.std}")
        if not all(math.isfinite(m) for m in self.mean):
            raise BackboneError(f"normalisation mean must be finite, got {self.mean}")


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision model and where to cut it."""

    name: str
    dim: int  # channels of the cut output = local descriptor size D
    stride: int  # output stride in pixels
    cut: Callable[[nn.Module], nn.Sequential]
    doc: str


class Backbone(NamedTuple):
    """What :func:`load_backbone` returns (also unpacks as a 5-tuple)."""

    module: nn.Sequential
    dim: int
    normalization: Normalization
    padding: str  # "torch" or "tf_same"
    source: str  # "random", "shipped:<file>", "torchvision:<Weights>" or "file:<path>"


def _resnet_trunk(model: nn.Module) -> nn.Sequential:
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            "vgg16",
            512,
            16,
            # conv5_3 before its ReLU and the last max-pool, as the paper and the PyTorch ports.
            lambda m: m.features[:-2],
            "VGG16 to conv5_3 (pre-ReLU): the paper's best network; heavy on CPU.",
        ),
        BackboneSpec(
            "alexnet",
            256,
            16,
            lambda m: m.features[:-2],
            "AlexNet to conv5 (pre-ReLU): the paper's small network.",
        ),
        BackboneSpec("resnet18", 512, 32, _resnet_trunk, "ResNet-18 conv1..layer4, no avgpool/fc."),
        BackboneSpec(
            "resnet50", 2048, 32, _resnet_trunk, "ResNet-50 conv1..layer4, no avgpool/fc."
        ),
        BackboneSpec(
            "mobilenet_v2",
            96,
            16,
            # Cut after features[13] (96 channels, stride 16): NetVLAD-64 gives 6144-D, 24 KiB per
            # image. Measured in this project with the shipped weights, K=64, 640 px, corridor set:
            # R@1 85.6 % here vs 88.3 % for the full features (1280 ch, 81920-D, 320 KiB/image)
            # and 71.2 % for global average pooling. This output is a linear bottleneck (no
            # activation), so its values are signed: do NOT clamp or ReLU them.
            lambda m: m.features[:14],
            "MobileNetV2 to features[13] (96 ch, stride 16): the CPU-friendly default.",
        ),
    ]
}


def available_backbones() -> list[str]:
    return list(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        ) from None


# --- TensorFlow "SAME" padding ---------------------------------------------------------------


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: the extra pixel of an odd total goes bottom/right.

    Same parameters as ``nn.Conv2d`` (state-dict keys unchanged); ``padding`` must be 0.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        ph = _same_pad(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = _same_pad(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
        if ph % 2 or pw % 2:  # asymmetric: the extra row/column goes bottom/right
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            ph = pw = 0
        padding = (ph // 2, pw // 2)  # symmetric: let the conv pad, no copy of the input
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    effective = (kernel - 1) * dilation + 1
    return max((math.ceil(size / stride) - 1) * stride + effective - size, 0)


def apply_tf_same_padding(module: nn.Module) -> int:
    """Swap every Conv2d with a kernel > 1 for a :class:`TFSameConv2d`; returns how many."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Conv2d or max(child.kernel_size) == 1:
                continue
            if child.padding_mode != "zeros":
                raise BackboneError(
                    f"tf_same padding needs zero padding, {name} uses {child.padding_mode}"
                )
            new = TFSameConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=0,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                device="meta",
            )
            new.weight = child.weight
            new.bias = child.bias
            new.train(child.training)
            setattr(parent, name, new)
            swapped += 1
    return swapped


# --- weights -----------------------------------------------------------------------------------


def _unavailable(name: str, what: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"{what} for backbone {name!r} are not available ({reason}). Either go online once so "
        f"torchvision downloads them into {torch.hub.get_dir()}, pass --backbone-weights FILE "
        f"(a torchvision-layout state dict of the full {name} model), or pass "
        f"--backbone-weights none for random weights (tests only)."
    )


def torchvision_weights_url(name: str) -> tuple[str, str]:
    """(download URL, label) of torchvision's default ImageNet weights for ``name``."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return weights.url, f"torchvision:{weights}"


def _download_torchvision(name: str, progress: bool) -> tuple[dict[str, Any], str]:
    url, label = torchvision_weights_url(name)
    try:
        state = torch.hub.load_state_dict_from_url(
            url, progress=progress, map_location="cpu", weights_only=True
        )
    except (urllib.error.URLError, OSError, RuntimeError, EOFError) as exc:
        raise _unavailable(name, "torchvision's ImageNet weights", _first_line(exc)) from exc
    return state, label


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def code_refusal(exc: BaseException) -> str | None:
    """What a weights-only ``torch.load`` blocked, as one sentence; None for other failures.

    torch names the blocked global ("GLOBAL posix.system") between lines of advice that end in
    its documentation link; the user needs the name, not the advice.
    """
    blocked = re.search(r"\bGLOBAL ([\w.]+)", str(exc))
    if blocked is None:
        return None
    name = blocked[1].rstrip(".")
    return f"this file contains code (pickle object {name}); only plain weights are loaded"


def describe_load_error(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's advice to
    retry with ``weights_only=False`` (which would run code from the file)."""
    text = str(exc)
    if "Weights only load failed" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if refusal := code_refusal(exc):
            return refusal
        detail = next(
            (
                line.removeprefix("WeightsUnpickler error:").strip()
                for line in lines[1:]
                if "weights_only" not in line and not line.startswith(("Please file", "Check the"))
            ),
            "",
        )
        return f"not a valid torch file: {detail or 'unpickling failed'}"
    if "not resizable" in text:  # a memory-mapped load met a compressed entry
        return (
            "its data is compressed, which torch.save never does (a zip bomb?); refused before "
            "inflating it"
        )
    if isinstance(exc, OSError | EOFError) or "zip" in text.lower():
        return f"truncated or corrupt file: {_first_line(exc)}"
    return _first_line(exc)


def read_sidecar(weights_file: Path) -> dict[str, Any]:
    """The JSON sidecar next to a weights file (same stem, ``.json``), or {} when there is none."""
    sidecar = weights_file.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackboneError(f"{sidecar}: unreadable sidecar ({_first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise BackboneError(f"{sidecar}: sidecar must be a JSON object")
    return data


def _sidecar_facts(name: str, sidecar: dict[str, Any], where: Path) -> tuple[Normalization, str]:
    if sidecar.get("arch", name) != name:
        raise BackboneError(f"{where}: weights are for {sidecar['arch']!r}, not {name!r}")
    if sidecar.get("layout", "torchvision") != "torchvision":
        raise BackboneError(f"{where}: layout {sidecar['layout']!r} is not torchvision's")
    padding = sidecar.get("padding", "torch")
    if padding not in PADDINGS:
        raise BackboneError(f"{where}: padding {padding!r} is not one of {PADDINGS}")
    norm = sidecar.get("normalize")
    if norm is None:
        return IMAGENET, padding
    try:
        return Normalization(mean=tuple(norm["mean"]), std=tuple(norm["std"])), padding
    except (KeyError, TypeError) as exc:
        raise BackboneError(f"{where}: 'normalize' needs 'mean' and 'std' lists") from exc


def _read_weights_file(name: str, path: Path, sidecar: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise _unavailable(name, f"the weights file {path}", "file not found")
    expected = sidecar.get("sha256")
    if expected:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != str(expected).lower():
            raise BackboneError(
                f"{path}: sha256 does not match its sidecar (corrupt or replaced file)"
            )
    try:
        state = _load_mapped(path)
    except Exception as exc:  # zip, pickle, EOF and weights-only refusals all land here
        raise BackboneError(
            f"{path}: not a readable state dict ({describe_load_error(exc)})"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BackboneError(f"{path}: not a state dict of tensors")
    return {k: v.clone() for k, v in state.items()}  # in memory, not tied to the file


def _load_mapped(path: Path) -> Any:
    """``torch.load`` memory-mapped, as model files (``--model``) are read.

    A zip whose entries are compressed (torch.save never compresses) cannot be mapped and is
    refused before anything is inflated: a 9.7 MB zip bomb grew to 10.5 GB before its refusal
    when loaded in full. An old-style (non-zip) file cannot be mapped either: it is read in full.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap can only be used" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_full_model(name: str, state: dict[str, Any], origin: str) -> nn.Module:
    """Build the full torchvision model without initialising it and load ``state`` strictly."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        first = (missing or unexpected or mismatched)[0]
        raise BackboneError(
            f"{origin}: not a {name} state dict ({len(missing)} missing, {len(unexpected)} "
            f"unexpected keys, {len(mismatched)} shape mismatches; first: {first})"
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _random_model(name: str) -> nn.Module:
    """The cut part only gets random weights (building a full VGG16 costs seconds)."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    trunk = get_spec(name).cut(model).to_empty(device="cpu")
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.Linear):
            m.reset_parameters()
    return trunk


def load_backbone(
    name: str,
    weights: str | Path | None = None,
    *,
    padding: str | None = None,
    progress: bool = True,
) -> Backbone:
    """Build backbone ``name`` with ``weights`` (see the module doc); ``padding`` overrides."""
    spec = get_spec(name)
    normalization, implied_padding = IMAGENET, "torch"
    shipped = weights is None and name in SHIPPED_WEIGHTS
    if shipped:
        weights = paths.models_dir() / SHIPPED_WEIGHTS[name]
    if isinstance(weights, str) and weights.lower() == RANDOM_WEIGHTS:
        trunk, source = _random_model(name), "random"
    elif weights is None or (isinstance(weights, str) and weights.lower() == TORCHVISION_WEIGHTS):
        state, source = _download_torchvision(name, progress)
        trunk = spec.cut(_load_full_model(name, state, source))
    else:
        path = Path(weights).expanduser()
        sidecar = read_sidecar(path)
        normalization, implied_padding = _sidecar_facts(name, sidecar, path)
        state = _read_weights_file(name, path, sidecar)
        trunk = spec.cut(_load_full_model(name, state, str(path)))
        source = f"shipped:{path.name}" if shipped else f"file:{path.resolve()}"
    padding = implied_padding if padding is None else padding
    if padding not in PADDINGS:
        raise BackboneError(f"padding {padding!r} is not one of {PADDINGS}")
    if padding == "tf_same":
        apply_tf_same_padding(trunk)
    for tensor in [*trunk.parameters(), *trunk.buffers()]:
        if tensor.is_meta:  # a torchvision change that our cut does not cover
            raise BackboneError(f"backbone {name!r}: some weights were left uninitialised")
    return Backbone(trunk.eval(), spec.dim, normalization, padding, source)
