"""Photometric variants of a photo: a synthetic night (darker, another gamma and colour, noise,
blur, often grey), for training under appearance change.

With ``AugmentConfig.variants`` N > 0, each training database photo gets N variants that join the
training queries, at the photo's own position: the photo itself (and its neighbours within 10 m)
are their positives. They teach what a place looks like in other light where the photos show it
in one light only. A variant is a function of (seed, photo path, variant number) alone, so a run,
its resume and every rank of a DDP job draw the same pixels.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..trainconfig import AugmentConfig


def variant_rng(seed: int, path: str, variant: int) -> np.random.Generator:
    """The random stream of one variant of one photo (stable across processes and runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(str(path).encode("utf-8")), int(variant)])


def synthetic_night(
    image: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig
) -> torch.Tensor:
    """``image`` (3, H, W, RGB in [0, 1]) as if taken in other light; a new tensor."""
    x = image.float().clamp(0, 1)
    x = x ** float(rng.uniform(*cfg.gamma)) * float(rng.uniform(*cfg.gain))
    cast = 1 + rng.uniform(-cfg.colour, cfg.colour, 3)
    x = x * torch.as_tensor(cast, dtype=x.dtype).view(3, 1, 1)
    if rng.random() < cfg.blur:
        x = F.avg_pool2d(x[None], 5, 1, 2, count_include_pad=False)[0]
    sigma = float(rng.uniform(*cfg.noise))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x = x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    if rng.random() < cfg.grey:
        x = x.mean(0, keepdim=True).expand(3, -1, -1)
    if cfg.stretch:  # as night photos often come brightness-normalised
        lo, hi = torch.quantile(x.flatten()[::7], torch.tensor([0.01, 0.99], dtype=x.dtype))
        x = (x - lo) / (hi - lo).clamp_min(1e-3)
    return x.clamp(0, 1).contiguous()


def augmenter(cfg: AugmentConfig, seed: int):
    """The store's ``augment(image, path, variant)`` for a run with ``seed``."""

    def augment(image: torch.Tensor, path: str, variant: int) -> torch.Tensor:
        return synthetic_night(image, variant_rng(seed, path, variant), cfg)

    return augment
