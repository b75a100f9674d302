"""netvlad-gui's own checkpoint format: one torch.save'd dict of plain types and tensors.

``{"format": "netvlad-gui", "version": 1, "config", "padding", "normalization", "meta",
"state_dict", "extra"}`` — everything loads with ``torch.load(weights_only=True)``, so opening a
checkpoint never runs code. Checkpoints of other projects are the importers' job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from netvlad_gui.core.config import ModelConfig
from netvlad_gui.core.errors import NetvladError
from netvlad_gui.core.model.backbones import Normalization, code_refusal, describe_load_error
from netvlad_gui.core.model.network import PlaceModel, build_model
from netvlad_gui.core.paths import atomic_open

FORMAT = "netvlad-gui"
VERSION = 1


class CheckpointError(NetvladError, ValueError):
    """A checkpoint that cannot be read: missing, corrupt, foreign, too new or mismatched."""


class ForeignCheckpointError(CheckpointError):
    """A readable file that is not a netvlad-gui checkpoint (an importer may know it)."""


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything weights_only loading would refuse, before it reaches the disk."""
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint {where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"checkpoint {where}: {type(value).__name__} is not a plain type or tensor")


def save_checkpoint(model: PlaceModel, path: str | Path, *, extra: dict | None = None) -> None:
    """Write ``model`` to ``path`` atomically (``paths.atomic_open``: temp file, fsync, rename)."""
    path = Path(path)
    norm = model.normalization
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": dataclasses.asdict(model.config),
        "padding": model.padding,
        "normalization": {"mean": list(norm.mean), "std": list(norm.std)},
        "meta": dict(model.meta),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    for key in ("config", "meta", "extra"):
        _check_plain(payload[key], key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _read(path: str | Path, *, mmap: bool) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # zip/pickle/EOF errors and weights-only refusals
        if mmap and "mmap" in str(exc):  # an old-style (non-zip) file: read it in full
            return _read(path, mmap=False)
        if refusal := code_refusal(exc):
            raise CheckpointError(f"{path}: refused for safety: {refusal}") from None
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({describe_load_error(exc)})"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ForeignCheckpointError(f"{path}: not a netvlad-gui checkpoint")
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: written by a newer netvlad-gui (format version {version}, "
            f"this one reads up to {VERSION}); upgrade netvlad-gui"
        )
    for key, kind in (
        ("config", dict),
        ("meta", dict),
        ("state_dict", dict),
        ("normalization", dict),
    ):
        if not isinstance(obj.get(key), kind):
            raise CheckpointError(f"{path}: checkpoint lacks a valid {key!r} entry")
    return obj


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """Everything but the weights (format, version, config, padding, normalization, meta, extra)."""
    obj = _read(path, mmap=True)
    return {k: v for k, v in obj.items() if k != "state_dict"}


def non_finite_keys(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold a NaN or an infinity.

    Such weights make every descriptor NaN, which a search then silently never matches. A finite
    sum proves a tensor finite and is much faster than ``isfinite`` on big ones; only an
    infinite sum (NaN, inf or overflow) needs the element-wise check.
    """
    return [
        key
        for key, value in state.items()
        if torch.is_tensor(value)
        and value.is_floating_point()
        and not torch.isfinite(value.sum())
        and not torch.isfinite(value).all()
    ]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> PlaceModel:
    """Rebuild the model from a checkpoint; ``model.extra`` holds the checkpoint's extra dict."""
    obj = _read(path, mmap=False)
    try:
        config = ModelConfig(**obj["config"])
        norm = obj["normalization"]
        normalization = Normalization(mean=tuple(norm["mean"]), std=tuple(norm["std"]))
        model = build_model(
            config, "none", normalization=normalization, padding=obj.get("padding", "torch")
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: invalid model description ({_first_line(exc)}): the file is damaged or "
            "not a model this app can use; use another checkpoint"
        ) from exc
    state = obj["state_dict"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k
        for k in expected
        if k in state
        and (not torch.is_tensor(state[k]) or tuple(state[k].shape) != tuple(expected[k].shape))
    ]
    if missing or unexpected or mismatched:
        first = (mismatched or missing or unexpected)[0]
        raise CheckpointError(
            f"{path}: weights do not match {config.name} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} wrong shape; first: {first})"
        )
    if bad := non_finite_keys(state):
        raise CheckpointError(
            f"{path}: weights hold NaN or infinity ({len(bad)} tensors, first: {bad[0]}): the file "
            "is damaged or its training diverged; use another checkpoint"
        )
    model.load_state_dict(state, strict=True)
    model.meta = dict(obj["meta"])
    model.extra = dict(obj.get("extra") or {})
    return model.to(torch.device(map_location))
