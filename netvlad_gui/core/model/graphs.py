"""The user cache of inference graphs, found without torch; exported with torch when missing.

    cache_dir()/onnx/graphs/<key>.onnx   pixels (B, H, W, 3) uint8 -> backbone maps (B, D, h, w)
    cache_dir()/onnx/graphs/<key>.json   what it was made from: the key's parts, the versions,
                                         the check against torch
    cache_dir()/onnx/bases/<key>.pt      a new model before its NetVLAD initialisation (a
                                         netvlad-gui checkpoint), for a new library's build

A graph's key is a hash of the backbone's weights as a checkpoint stores them (names, shapes,
types, values), its padding and input normalisation, and the export format: computed from the
checkpoint read without torch (core/model/ckptfile.py), so a model's graph is found without
importing torch, and a retrained or replaced model.pt gets its own. A new model's base is keyed
by what makes it: the model spec, its weights file (size and modification time) and the
installed versions. Torch loads only to make what is missing (the first use of a weights file),
and the job says so: the progress stage "prepare" ("preparing the model for fast inference
(once)"). A graph that ONNX Runtime cannot load (damaged) is exported again, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from .. import paths
from .ckptfile import CheckpointFormatError
from .ortmodel import (
    OPSET,
    ModelFile,
    OnnxExportError,
    OrtModel,
    cpu_threads,
    installed_version,
    shared_session,
)

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the export or its rewrite changes: older cached graphs are not used
KEEP = 8  # graphs (and bases) kept in the cache: the most recently used
#: The progress stage of an export, and what the fronts call it.
PREPARE = "prepare"
PREPARE_LABEL = "preparing the model for fast inference (once)"

StageProgress = Callable[[str, int, int], None]


def cache_folder() -> Path:
    return paths.cache_dir() / "onnx"


def graph_key(file: ModelFile) -> str:
    """The hash that names a checkpoint's graph (see the module's docstring)."""
    h = hashlib.sha256()
    norm = file.header.get("normalization") or {}
    meta = {
        "format": FORMAT,
        "opset": OPSET,
        "padding": file.header.get("padding", "torch"),
        "mean": [float(v) for v in norm.get("mean", [])],
        "std": [float(v) for v in norm.get("std", [])],
        "backbone": file.backbone,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(k for k in file.state if k.startswith("backbone.")):
        arr = np.asarray(file.state[name])
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()[:32]


def graph_path(key: str) -> Path:
    return cache_folder() / "graphs" / f"{key}.onnx"


def find_graph(key: str) -> Path | None:
    """The cached graph for ``key`` with its record, or None (missing, or its record unreadable
    or for another key: made again)."""
    path = graph_path(key)
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key or record.get("format") != FORMAT or not path.is_file():
        return None
    return path


def forget(path: Path) -> None:
    """Remove a cached file and its record."""
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def _prepare_with_torch(progress: StageProgress | None, make: Callable[[], None]) -> None:
    """Run ``make`` (which needs torch) under the "prepare" stage, torch loaded first."""
    if progress:
        progress(PREPARE, 0, 1)
    log.info("%s", PREPARE_LABEL)
    from .engine import load_engine

    load_engine()
    try:
        make()
    except OSError as exc:  # a full or read-only cache: say so; torch can still run the model
        raise OnnxExportError(
            f"cannot keep the model's graph in {cache_folder()} ({exc}); use --runtime torch"
        ) from None
    if progress:
        progress(PREPARE, 1, 1)


def ort_model(
    file: ModelFile, *, progress: StageProgress | None = None, torch_model=None
) -> OrtModel:
    """``file``'s model run by ONNX Runtime; its graph exported first when not in the cache.

    ``torch_model``: the same model already loaded in torch, if the caller has it (the export
    needs it; without it the checkpoint at ``file.path`` is loaded).
    """
    key = graph_key(file)
    path = find_graph(key)
    if path is not None:
        try:
            return OrtModel(_session(path), file, path)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file: export it again
            log.warning(
                "the cached model graph %s cannot be loaded (%s): exporting it again", path, exc
            )
            forget(path)

    def make() -> None:
        from .checkpoint import load_checkpoint
        from .onnxbackbone import export_graph

        model = torch_model if torch_model is not None else load_checkpoint(file.path)
        export_graph(model, graph_path(key), record={"key": key, "format": FORMAT})
        _trim(graph_path(key).parent, "*.onnx")

    _prepare_with_torch(progress, make)
    path = graph_path(key)
    return OrtModel(_session(path), file, path)


def _session(path: Path):
    st = path.stat()
    sess = shared_session(str(path), cpu_threads(), st.st_mtime_ns)
    with contextlib.suppress(OSError):  # a read-only cache: used as it is
        os.utime(path.with_suffix(".json"))  # most recently used: kept longest
    return sess


def _trim(folder: Path, pattern: str, recency=lambda f: f.with_suffix(".json")) -> None:
    """Keep the KEEP most recently used files (and their records) of ``folder``; ``recency``
    names the file whose modification time says when each was last used."""

    def used(f: Path) -> float:
        try:
            return recency(f).stat().st_mtime
        except OSError:
            return 0.0

    for old in sorted(folder.glob(pattern), key=used, reverse=True)[KEEP:]:
        forget(old)


# -- a new model's base -----------------------------------------------------------------------
def base_key(spec: str, backbone_weights: str | None) -> str | None:
    """What names a new model of ``spec`` made from ``backbone_weights``, known without torch;
    None when it cannot be cached (random weights: a new draw each time)."""
    from ..config import ModelConfig
    from .resolve import looks_like_file
    from .zoo import is_downloadable, model_path

    if backbone_weights == "none":
        return None
    parts: dict = {"spec": spec, "format": FORMAT, "netvlad_gui": _version()}
    for dist in ("torch", "torchvision"):
        parts[dist] = _dist_version(dist)
    if looks_like_file(spec) or is_downloadable(spec):
        source = Path(spec).expanduser() if looks_like_file(spec) else model_path(spec)
        if source is None or not source.is_file():
            return None
        parts["file"] = _stamp(source)
    else:
        cfg = ModelConfig.from_name(spec)
        if backbone_weights:
            weights = Path(backbone_weights).expanduser()
            if not weights.is_file():
                return None
            parts["weights"] = _stamp(weights)
            parts["sidecar"] = _stamp(weights.with_suffix(".json"))
        elif cfg.backbone in paths.SHIPPED_WEIGHTS:
            shipped = paths.models_dir() / paths.SHIPPED_WEIGHTS[cfg.backbone]
            parts["weights"] = _stamp(shipped)
            parts["sidecar"] = _stamp(shipped.with_suffix(".json"))
        else:
            parts["weights"] = "torchvision"  # fixed per torchvision version, in parts already
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _stamp(path: Path) -> list | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _version() -> str:
    from ... import __version__

    return __version__


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def new_model(
    spec: str, backbone_weights: str | None, *, progress: StageProgress | None = None
) -> OrtModel | None:
    """A new model of ``spec`` run by ONNX Runtime, its base and graph made once with torch;
    None when it cannot be cached (the caller builds it with torch).

    A netvlad-gui checkpoint named as the spec is read as it is; anything else (a named model,
    BACKBONE-POOLING, a checkpoint to import) is built once by ``resolve_model`` and kept as a
    base in the cache.
    """
    from .resolve import looks_like_file

    if looks_like_file(spec) and Path(spec).expanduser().is_file():
        try:
            return ort_model(ModelFile.read(Path(spec).expanduser()), progress=progress)
        except CheckpointFormatError:
            pass  # an importable checkpoint (MATLAB, other ports): made into a base below
    key = base_key(spec, backbone_weights)
    if key is None:
        return None
    base = cache_folder() / "bases" / f"{key}.pt"
    try:
        file = ModelFile.read(base)
    except (OSError, CheckpointFormatError):
        file = None
    else:
        with contextlib.suppress(OSError):  # a read-only cache: used as it is
            os.utime(base)  # most recently used: kept longest
    if file is None:

        def make() -> None:
            from .checkpoint import save_checkpoint
            from .onnxbackbone import export_graph
            from .resolve import resolve_model

            model = resolve_model(spec, backbone_weights)
            save_checkpoint(model, base)
            _trim(base.parent, "*.pt", recency=lambda f: f)
            gkey = graph_key(ModelFile.read(base))
            if find_graph(gkey) is None:  # the graph in the same step: one "prepare" stage
                export_graph(model, graph_path(gkey), record={"key": gkey, "format": FORMAT})
                _trim(graph_path(gkey).parent, "*.onnx")

        _prepare_with_torch(progress, make)
        file = ModelFile.read(base)
    return ort_model(file, progress=progress)


def versions() -> dict:
    """What the graphs here were made and are run with (``netvlad info``)."""
    return {"onnxruntime": installed_version(), "cache": str(cache_folder())}
