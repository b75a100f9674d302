"""Exporting backbones to ONNX (with torch), and ONNX Runtime inside a torch model.

Two graphs are made here, both once per weights, into the user cache:

- :func:`export_graph`: photo pixels -> backbone maps, the input normalisation inside: the graph
  the torch-free path runs (core/model/ortmodel.py, found by core/model/graphs.py);
- :func:`ort_backbone`: the backbone alone, which ``features.inference_model`` puts inside a
  torch model when torch-side code (training's evaluation, Ray's workers) asks for
  ``runtime="onnxruntime"``. On the default model (MobileNetV2, TF "SAME" padding) it ran 1.78x
  torch's folded-BN channels-last fp32 path, descriptors at cosine 1.000000
  (benchmarks/runtime_onnx.py); it is keyed by a hash of its state dict and config. ``TFSameConv2d`` computes its padding in Python, so a traced graph
is only right at the traced size: :func:`same_upper` turns each of its convs into ONNX's
``auto_pad=SAME_UPPER`` (TF's "SAME" at any size), and every export is checked against torch at
odd sizes before it is kept.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import paths
from ..paths import atomic_path, atomic_write_text
from .ortmodel import (
    INPUT,
    INSTALL,
    OPSET,
    OUTPUT,
    OnnxExportError,
    OnnxRuntimeMissing,  # noqa: F401 - what require() raises, named here for its callers
    installed_version,
    require_modules,
)
from .runtime import asked_precision

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the export or its rewrite changes: older cached files are not reused
TRACE_SIZE = (160, 224)  # multiples of 32: every stride-2 "SAME" conv pads asymmetrically
CHECK_SIZES = ((97, 131), (128, 95))  # odd sizes the export must match torch at
MIN_COSINE = 0.9999
KEEP = 6  # exported backbones kept in the cache


def require():
    """The ``onnx`` and ``onnxruntime`` modules, or OnnxRuntimeMissing saying how to install."""
    return require_modules("onnx", "onnxruntime")


def torch_instead(cfg, device_type: str) -> str:
    """Why torch runs the backbone although ``cfg.runtime`` asks for ONNX Runtime ("" if not)."""
    if cfg.runtime != "onnxruntime":
        return ""
    if device_type != "cpu":
        return f"ONNX Runtime runs the backbone on the CPU only, torch runs it on {device_type}"
    if asked_precision(cfg) == "bf16":
        return "ONNX Runtime runs the backbone in fp32 only, torch runs it in bf16 (--precision)"
    return ""


def runtime_used(cfg, device_type: str) -> str:
    """ "onnxruntime" or "torch": what runs the backbone for ``cfg`` on this device."""
    if cfg.runtime == "onnxruntime" and not torch_instead(cfg, device_type):
        return "onnxruntime"
    return "torch"


def describe(cfg, device_type: str) -> dict:
    """What ``netvlad info`` says about the backbone's runtime for ``cfg`` on this device."""
    out = {
        "runtime": runtime_used(cfg, device_type),
        "runtime_asked": cfg.runtime,
        "onnxruntime": installed_version(),  # None: not installed
    }
    why = torch_instead(cfg, device_type)
    if not why and cfg.runtime == "onnxruntime" and out["onnxruntime"] is None:
        why = f"onnxruntime is not installed: {INSTALL}"
    return out | ({"runtime_note": why} if why else {})


_said: set[str] = set()


def wanted(model: nn.Module, cfg) -> bool:
    """Whether ``inference_model`` should give ``model`` an ONNX Runtime backbone.

    Falls back to torch (and logs why once) off the CPU, in bf16, or for a model without a
    backbone; raises OnnxRuntimeMissing when the packages are missing.
    """
    if cfg.runtime != "onnxruntime":
        return False
    if not (hasattr(model, "backbone") and hasattr(model, "local_features")):
        why = f"{type(model).__name__} has no backbone to run with ONNX Runtime"
    else:
        why = torch_instead(cfg, model.device.type)
    if why:
        if why not in _said:
            _said.add(why)
            log.warning("%s", why)
        return False
    require()
    return True


def reference(module: nn.Module) -> nn.Module:
    """The torch backbone behind ``module`` (itself unless it is an :class:`OrtBackbone`)."""
    return module.reference if isinstance(module, OrtBackbone) else module


def backbone_key(backbone: nn.Module, name: str, padding: str) -> str:
    """A hash of the backbone's weights, its config and the exporter: the cache file's name."""
    h = hashlib.sha256()
    meta = {"name": name, "padding": padding, "format": FORMAT, "opset": OPSET}
    h.update(json.dumps(meta | {"torch": torch.__version__}, sort_keys=True).encode())
    for key, t in backbone.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def same_upper(graph) -> int:
    """TF "SAME" at any size: each Conv with a kernel > 1 pads with ``auto_pad=SAME_UPPER``.

    The trace holds ``TFSameConv2d``'s padding for the traced size only: a Pad before the conv
    (odd total) or the conv's own ``pads`` (even total). Both go; dead shape arithmetic is dropped.
    Returns how many convs were rewritten. Only for models built with ``padding="tf_same"``
    (every conv with a kernel > 1 is then a ``TFSameConv2d``).
    """
    import onnx

    nodes = graph.graph.node
    pads = {n.output[0]: n for n in nodes if n.op_type == "Pad"}
    done = 0
    for conv in nodes:
        if conv.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        if max(attrs.get("kernel_shape", [1])) <= 1:
            continue
        if conv.input[0] in pads:
            conv.input[0] = pads[conv.input[0]].input[0]
        for a in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("auto_pad", "SAME_UPPER"))
        done += 1
    live = {o.name for o in graph.graph.output}
    for n in reversed(list(nodes)):
        if any(o in live for o in n.output):
            live.update(n.input)
        else:
            nodes.remove(n)
    return done


def export(backbone: nn.Module, padding: str, path: Path) -> None:
    """Export ``backbone`` (dynamic batch, height, width) to ``path``, checked against torch."""
    onnx, _ = require()
    net = copy.deepcopy(backbone).float().eval().to("cpu", memory_format=torch.contiguous_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        axes = {0: "batch", 2: "height", 3: "width"}
        _export(net, torch.zeros(1, 3, *TRACE_SIZE), tmp, "images", "maps", axes)
        graph = onnx.load(tmp)
        if padding == "tf_same":
            same_upper(graph)
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
        _check(net, session(tmp))


def _check(net: nn.Module, sess) -> None:
    """Refuse an export whose maps differ from torch's at sizes other than the traced one."""
    gen = torch.Generator().manual_seed(0)
    for h, w in CHECK_SIZES:
        x = torch.randn(2, 3, h, w, generator=gen)
        with torch.inference_mode():
            want = net(x).flatten(1).double()
        got = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0]).flatten(1).double()
        cos = (
            float(nn.functional.cosine_similarity(want, got).min())
            if got.shape == want.shape
            else 0
        )
        if cos < MIN_COSINE:
            raise OnnxExportError(
                f"the ONNX export of the backbone disagrees with torch at {h}x{w} "
                f"(cosine {cos:.4f}); use --runtime torch"
            )


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session: all graph optimisations, torch's thread count, no spinning.

    Idle threads sleep instead of spinning, as torch's OpenMP threads do here (tune_process).
    """
    _, ort = require()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def _shared_session(path: str, threads: int, mtime_ns: int):
    return session(path, threads)


def cached_file(backbone: nn.Module, name: str, padding: str) -> Path:
    """The backbone's ONNX file in the cache, exported first when missing."""
    key = backbone_key(backbone, name, padding)
    folder = paths.cache_dir() / "onnx"
    path = folder / f"{paths.safe_name(name)}-{padding}-{key}.onnx"
    if not path.exists():
        log.info("exporting the %s backbone to %s", name, path)
        export(backbone, padding, path)
        # Older weights' files (a retrained model) go, all but the KEEP most recent.
        files = sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in files[KEEP:]:
            old.unlink(missing_ok=True)
    return path


class OrtBackbone(nn.Module):
    """The backbone run by ONNX Runtime: (B, 3, H, W) float32 -> (B, D, H', W') torch tensor.

    ``reference`` is the torch backbone it was exported from (kept so that ``inference_model``
    can go back to torch, and so that the model still has its parameters and device).
    """

    def __init__(self, sess, reference: nn.Module, path: Path) -> None:
        super().__init__()
        self.session, self.reference, self.path = sess, reference, path

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"images": x})[0])

    def __deepcopy__(self, memo: dict) -> OrtBackbone:
        # A session cannot be copied; it is safe to share between threads.
        return OrtBackbone(self.session, copy.deepcopy(self.reference, memo), self.path)


def ort_backbone(model: nn.Module) -> OrtBackbone:
    """``model.backbone`` as an :class:`OrtBackbone` (exported to the cache when needed).

    The torch backbone becomes its ``reference``: pass a copy of the model, not one in use.
    """
    torch_bb = reference(model.backbone)
    name, padding = model.config.backbone, getattr(model, "padding", "torch")
    path = cached_file(torch_bb, name, padding)
    try:
        sess = _shared_session(str(path), torch.get_num_threads(), path.stat().st_mtime_ns)
    except Exception as exc:  # noqa: BLE001 - a damaged cache file: export it again
        log.warning("cannot load %s (%s): exporting again", path, exc)
        path.unlink(missing_ok=True)
        path = cached_file(torch_bb, name, padding)
        sess = _shared_session(str(path), torch.get_num_threads(), path.stat().st_mtime_ns)
    return OrtBackbone(sess, torch_bb, path)


# -- the torch-free path's graph: pixels in, backbone maps out ---------------------------------
class PixelInput(nn.Module):
    """A place model's backbone fed with photo pixels (B, H, W, 3) uint8, as the decoder gives
    them: scaled to [0, 1] and normalised as ``PlaceModel`` does, in the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = reference(model.backbone)
        self.register_buffer("mean", model.input_mean.detach().clone().view(1, 3, 1, 1))
        self.register_buffer("std", model.input_std.detach().clone().view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return self.backbone((x - self.mean) / self.std)


def export_graph(model: nn.Module, path: Path, record: dict) -> None:
    """Export ``model``'s backbone with its input scaling (dynamic batch, height, width) to
    ``path``, check it against torch at odd sizes, and write ``record`` (what it was made from,
    the versions and the check's cosines) beside it as ``path.with_suffix(".json")``.

    The record is written last: a graph without one is not used (core/model/graphs.py).
    """
    onnx, _ = require()
    net = PixelInput(copy.deepcopy(model).float().cpu()).eval()
    net = net.to(memory_format=torch.contiguous_format)
    padding = getattr(model, "padding", "torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pixels = torch.zeros(1, *TRACE_SIZE, 3, dtype=torch.uint8)
        _export(net, pixels, tmp, INPUT, OUTPUT, {0: "batch", 1: "height", 2: "width"})
        graph = onnx.load(tmp)
        if padding == "tf_same":
            same_upper(graph)
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
        cosines = _check_pixels(net, session(tmp))
    versions = {"torch": torch.__version__, "onnxruntime": installed_version()}
    versions["onnx"] = getattr(onnx, "__version__", None)
    facts = {"backbone": model.config.backbone, "padding": padding, "opset": OPSET}
    facts |= {"made_with": versions, "cosine_to_torch": cosines, "created": time.time()}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record | facts, indent=1))


def _export(net, example, path, input_name, output_name, input_axes) -> None:
    """``torch.onnx.export`` with the TorchScript exporter; a failure is one OnnxExportError."""
    out_axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: TFSameConv2d's Python padding
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,  # the TorchScript exporter: dynamo's ran for minutes here
                opset_version=OPSET,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: input_axes, output_name: out_axes},
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure: say so, torch still works
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise OnnxExportError(
            f"cannot export this backbone to ONNX ({type(exc).__name__}: {first}); "
            "use --runtime torch"
        ) from None


def _check_pixels(net: PixelInput, sess) -> dict[str, float]:
    """Refuse a graph whose maps differ from torch's at sizes other than the traced one; the
    cosine at each size checked."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for h, w in CHECK_SIZES:
        x = torch.randint(0, 256, (2, h, w, 3), generator=gen, dtype=torch.uint8)
        with torch.inference_mode():
            want = net(x).flatten(1).double()
        got = torch.from_numpy(sess.run(None, {INPUT: x.numpy()})[0]).flatten(1).double()
        cos = (
            float(nn.functional.cosine_similarity(want, got).min())
            if got.shape == want.shape
            else 0.0
        )
        if cos < MIN_COSINE:
            raise OnnxExportError(
                f"the ONNX export of the model disagrees with torch at {h}x{w} "
                f"(cosine {cos:.4f}); use --runtime torch"
            )
        out[f"{h}x{w}"] = round(cos, 6)
    return out
