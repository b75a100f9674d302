"""A training step's tuples and their images: decoded in DataLoader workers while the previous
step trains, then run through the model in one forward per step (what DDP needs).

Each tuple is a query, its best potential positive and its violating negatives (see mining.py);
a tuple with an image that does not decode is skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import ExtractConfig
from ..model.features import Forward
from ..model.network import PlaceModel
from ..photos.images import ImageLoadError, load_tensor
from .datasets import PlaceSet
from .mining import TrainTuple

log = logging.getLogger(__name__)


class GroupsForward(nn.Module):
    """One forward over several same-shape image batches, so DDP sees one pass per step."""

    def __init__(self, model: PlaceModel, autocast: torch.dtype | None) -> None:
        super().__init__()
        self.inner = Forward(model, autocast)

    def forward(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.inner(g) for g in groups]


@dataclass
class Step:
    index: int  # 0-based step in the epoch
    tuples: list[TrainTuple]  # this rank's share
    total_tuples: int  # over all ranks


class StepImages(Dataset):
    """A step's images (query, positive, negatives of each tuple), decoded in DataLoader workers."""

    def __init__(self, steps: list[Step], ps: PlaceSet, image_size: int, max_pixels: int) -> None:
        self.steps, self.ps, self.size, self.max_pixels = steps, ps, image_size, max_pixels

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int):
        step = self.steps[i]
        keys: list[tuple[str, int]] = []
        for t in step.tuples:
            for key in [("q", t.query), ("db", t.positive), *(("db", int(n)) for n in t.negatives)]:
                if key not in keys:
                    keys.append(key)
        images: dict[tuple[str, int], torch.Tensor] = {}
        for key in keys:
            path = self.ps.q_paths[key[1]] if key[0] == "q" else self.ps.db_paths[key[1]]
            try:
                images[key] = load_tensor(path, self.size, self.max_pixels)
            except (ImageLoadError, OSError) as exc:
                log.warning("%s: %s; its tuple is skipped", path, exc)
        tuples = [
            t
            for t in step.tuples
            if ("q", t.query) in images
            and ("db", t.positive) in images
            and all(("db", int(n)) in images for n in t.negatives)
        ]
        return step, tuples, images


def _identity(x):
    return x


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def load_steps(
    steps: list[Step], ps: PlaceSet, cfg: ExtractConfig
) -> Iterator[tuple[Step, list[TrainTuple], dict]]:
    """(step, its tuples whose images all decoded, images by key) for each step, in order."""
    ds = StepImages(steps, ps, cfg.image_size, cfg.max_pixels)
    if cfg.num_workers <= 0 or len(steps) < 2:
        yield from (ds[i] for i in range(len(ds)))
        return
    yield from DataLoader(
        ds,
        batch_size=None,
        collate_fn=_identity,
        worker_init_fn=_worker_init,
        num_workers=min(cfg.num_workers, len(steps)),
        prefetch_factor=2,
    )
