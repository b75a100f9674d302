"""The paper's NetVLAD initialisation from a set of photos: k-means centroids and alpha.

Shared by the index builder (a library's photos) and training (the training database), so both
sample local descriptors and record the result the same way.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import ExtractConfig, InitConfig
from .errors import DatasetError
from .features import Cancelled, iter_images
from .model import PlaceModel, init_netvlad, sample_local_descriptors
from .pooling import KMEANS_POINTS_PER_CLUSTER

log = logging.getLogger(__name__)


def initialise_from_images(
    model: PlaceModel,
    paths: Sequence[str | os.PathLike],
    init_cfg: InitConfig,
    extract_cfg: ExtractConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    meta: dict[str, Any] | None = None,
) -> float:
    """Initialise from up to ``num_images`` of ``paths`` (a seeded sample); return alpha.

    ``meta`` is recorded with the sample's size in ``model.meta["init"]``. Raises ``Cancelled``
    between images when ``cancel()`` turns true.
    """
    if not paths:
        raise DatasetError("no images to initialise the NetVLAD layer from")
    rng = np.random.default_rng(init_cfg.seed)
    pick = np.sort(rng.permutation(len(paths))[: init_cfg.num_images])
    chosen = [paths[i] for i in pick]
    device = model.device

    def images():
        for n, (_, tensor, _err) in enumerate(iter_images(chosen, extract_cfg), 1):
            if cancel is not None and cancel():
                raise Cancelled()
            if progress:
                progress(n, len(chosen))
            if tensor is not None:
                yield tensor.unsqueeze(0).to(device)

    model.eval()
    samples = sample_local_descriptors(
        model, images(), _per_image(model, init_cfg, len(chosen)), init_cfg.seed
    )
    alpha = init_netvlad(model, samples, init_cfg)
    model.meta["init"] = {
        "images": len(chosen),
        "descriptors": len(samples),
        "alpha": float(alpha),
        **(meta or {}),
    }
    log.info(
        "initialised NetVLAD from %d descriptors of %d images, alpha=%.2f",
        len(samples),
        len(chosen),
        alpha,
    )
    return alpha


def _per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """Descriptors to sample per image: the configured count, more for a small library, so that
    k-means gets enough samples per cluster (19 photos x 100 is too few for 64 clusters)."""
    clusters = getattr(model.pool, "num_clusters", 1)
    wanted = math.ceil(KMEANS_POINTS_PER_CLUSTER * clusters / max(images, 1))
    return max(init_cfg.descriptors_per_image, wanted)
