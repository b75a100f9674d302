"""The frozen part of the network, run once per photo of a training run and kept on disk.

By default only the backbone's last block and NetVLAD train (the paper's choice): the layers
before that block give the same output for a photo in every epoch. So each photo of a run (and
each photometric variant of it, see augment.py) goes through them once, at the start; the output
is kept in half precision in one file in the run folder, and every later pass (descriptor caches,
training steps, validation, whitening) starts from it. A step then costs the trainable block and
the pooling only, no photo is decoded twice, and memory stays flat however many photos a run has:
the process holds one batch or one step, the operating system's page cache holds the rest. With
``train_layers="all"`` nothing is frozen and the file keeps the normalised input images.

Why not DataLoader workers any more: forked from a process that holds the model and the caches,
each worker's resident size counted them again (7.5 GB for two workers on 200 photos).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ExtractConfig
from ..model.features import fold_batchnorm
from ..model.network import PlaceModel
from ..model.runtime import backbone_precision
from ..photos.decoding import Decoder
from ..photos.images import pixels_to_tensor
from .trainenv import DistInfo, all_gather_rows

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (photo path, variant); variant 0 is the photo as it is
Augment = Callable[[torch.Tensor, str, int], torch.Tensor]  # (image, path, variant) -> image


def frozen_split(model: PlaceModel) -> int:
    """How many of the backbone's first children have nothing to train (after set_trainable).

    0 when the backbone is not a sequence of blocks or its first block trains: then the whole
    backbone runs in every step, from the stored input images.
    """
    bb = model.backbone
    if not isinstance(bb, nn.Sequential):
        return 0
    for i, child in enumerate(bb.children()):
        if any(p.requires_grad for p in child.parameters()):
            return i
    return len(bb)


class Prefix(nn.Module):
    """Normalisation and the frozen blocks, prepared for inference (BatchNorm folded, a copy)."""

    def __init__(self, model: PlaceModel, split: int) -> None:
        super().__init__()
        import copy

        blocks = list(model.backbone.children())[:split] if split else []
        self.blocks = copy.deepcopy(nn.Sequential(*blocks)).eval()
        fold_batchnorm(self.blocks)
        for p in self.blocks.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", model.input_mean.detach().clone().view(1, 3, 1, 1))
        self.register_buffer("std", model.input_std.detach().clone().view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks((images - self.mean) / self.std)


class Tail(nn.Module):
    """What trains: the backbone from ``split`` on, then the pooling (and whitening, if asked).

    Shares its modules with the model, so the optimiser, checkpoints and the final model see the
    same weights. The backbone part runs under ``autocast`` when given (CUDA mixed precision);
    the pooling always in fp32 (see ``model_forward``).
    """

    def __init__(
        self,
        model: PlaceModel,
        split: int,
        autocast: torch.dtype | None = None,
        *,
        whiten: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(model.backbone.children())[split:])
        self.pool = model.pool
        self.whiten = model.whiten if whiten else None
        self.autocast = autocast
        self.dim = self.whiten.out_dim if self.whiten is not None else model.pool_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        kind = feats.device.type
        if self.autocast is not None:
            with torch.autocast(kind, dtype=self.autocast):
                x = self.blocks(feats)
        else:
            x = self.blocks(feats)
        with torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else nullcontext():
            x = self.pool(x.float())
            if self.whiten is not None:
                x = self.whiten(x)
        return x


class GroupsForward(nn.Module):
    """One forward over several same-shape batches, so DDP sees one pass per step."""

    def __init__(self, tail: Tail) -> None:
        super().__init__()
        self.inner = tail

    def forward(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.inner(g) for g in groups]


@dataclass(frozen=True)
class _Record:
    offset: int
    shape: tuple[int, ...]
    dtype: str  # "float16", or "float32" where half precision would overflow


class FrozenStore:
    """The frozen layers' output of every photo (and variant) of a run, in one file.

    ``build`` fills it; ``get``/``batches`` read it back as float32 tensors. Photos that could
    not be decoded are in ``errors`` with the reason. ``close`` removes the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = 0
        self.records: dict[Key, _Record] = {}
        self.errors: dict[Key, str] = {}

    # -- filling --

    def build(
        self,
        prefix: Prefix,
        wanted: Iterable[Key],
        cfg: ExtractConfig,
        *,
        augment: Augment | None = None,
        autocast: torch.dtype | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Decode each photo once (threads), make its variants, run the frozen layers, keep them."""
        by_path: dict[str, list[int]] = {}
        for path, variant in wanted:
            if (path, variant) not in self.records and (path, variant) not in self.errors:
                by_path.setdefault(path, [])
                if variant not in by_path[path]:
                    by_path[path].append(variant)
        paths = list(by_path)
        total = sum(len(v) for v in by_path.values())
        device = prefix.mean.device
        if autocast is None and backbone_precision(cfg, device.type) == "bf16":
            autocast = torch.bfloat16
        pending: dict[tuple[int, ...], list[tuple[Key, torch.Tensor]]] = {}
        done = 0

        def flush(shape: tuple[int, ...]) -> None:
            nonlocal done
            items = pending.pop(shape, [])
            if not items:
                return
            batch = torch.stack([t for _, t in items]).to(device)
            with torch.inference_mode():
                if autocast is not None:
                    with torch.autocast(device.type, dtype=autocast):
                        out = prefix(batch)
                else:
                    out = prefix(batch)
                out = out.float().cpu().numpy()
            for (key, _), fmap in zip(items, out, strict=True):
                self._put(key, fmap)
            done += len(items)
            if progress is not None:
                progress(done, total)

        decoder = Decoder(cfg)
        try:
            for i, pixels, err in decoder.decoded(paths):
                path = paths[i]
                if pixels is None:
                    for v in by_path[path]:
                        self.errors[(path, v)] = err
                    done += len(by_path[path])
                    continue
                image = pixels_to_tensor(pixels)
                for v in by_path[path]:
                    x = image if v == 0 or augment is None else augment(image, path, v)
                    group = pending.setdefault(tuple(x.shape), [])
                    group.append(((path, v), x))
                    if len(group) >= cfg.batch_size:
                        flush(tuple(x.shape))
            for shape in list(pending):
                flush(shape)
        finally:
            decoder.close()
        if progress is not None:
            progress(total, total)

    def _put(self, key: Key, fmap: np.ndarray) -> None:
        half = fmap.astype(np.float16)
        data = half if np.isfinite(half).all() or not np.isfinite(fmap).all() else fmap
        data = np.ascontiguousarray(data)
        os.pwrite(self._fd, data.tobytes(), self._end)
        self.records[key] = _Record(self._end, tuple(data.shape), str(data.dtype))
        self._end += data.nbytes

    # -- reading --

    def __contains__(self, key: Key) -> bool:
        return key in self.records

    def get(self, key: Key) -> torch.Tensor:
        rec = self.records[key]
        dtype = np.dtype(rec.dtype)
        nbytes = int(np.prod(rec.shape)) * dtype.itemsize
        raw = os.pread(self._fd, nbytes, rec.offset)
        return torch.from_numpy(
            np.frombuffer(raw, dtype=dtype).reshape(rec.shape).astype(np.float32)
        )

    def batches(
        self, keys: Sequence[Key], batch_size: int
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(positions in ``keys``, stacked features) of the stored keys, same shapes together."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            rec = self.records.get(key)
            if rec is None:
                continue
            group = groups.setdefault(rec.shape, [])
            group.append(i)
            if len(group) >= batch_size:
                yield list(group), torch.stack([self.get(keys[j]) for j in group])
                group.clear()
        for group in groups.values():
            if group:
                yield list(group), torch.stack([self.get(keys[j]) for j in group])

    @property
    def nbytes(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)


def describe(
    tail: Tail,
    store: FrozenStore,
    keys: Sequence[Key],
    batch_size: int,
    dist: DistInfo | None = None,
) -> np.ndarray:
    """(N, tail.dim) float32 descriptors of ``keys`` from the store; NaN rows for missing ones.

    Under DDP each rank describes every world-th key and the rows are all-gathered.
    """
    dist = dist or DistInfo()
    mine = list(range(dist.rank, len(keys), dist.world))
    local = np.full((len(mine), tail.dim), np.nan, dtype=np.float32)
    device = next(tail.parameters()).device
    with torch.inference_mode():
        for idx, feats in store.batches([keys[i] for i in mine], batch_size):
            local[idx] = tail(feats.to(device)).float().cpu().numpy()
    local[~np.isfinite(local).all(axis=1)] = np.nan
    if not dist.active:
        return local
    return all_gather_rows(local, len(keys), dist)
