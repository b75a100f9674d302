"""Which photos the NetVLAD initialisation uses, decided without torch, so that a build can
start decoding them while torch is still loading."""

from __future__ import annotations

import numpy as np

from ..config import InitConfig


def sample_positions(count: int, init_cfg: InitConfig) -> np.ndarray:
    """Which of ``count`` photos the initialisation uses: a seeded sample, in order."""
    rng = np.random.default_rng(init_cfg.seed)
    return np.sort(rng.permutation(count)[: init_cfg.num_images])
