"""The paper's NetVLAD initialisation from a set of photos: k-means centroids and alpha.

Shared by the index builder (a library's photos) and training (the training database), so both
sample local descriptors and record the result the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import ExtractConfig, InitConfig
from ..errors import DatasetError
from ..photos.decoding import Decoder
from .features import Cancelled, iter_images
from .head import per_image
from .network import PlaceModel, init_netvlad, sample_local_descriptors
from .onepass import FeatureMaps, initialise_one_pass, record_init  # noqa: F401 - their old home
from .sample import sample_positions

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
    decoder: Decoder | None = None,
) -> float:
    """Initialise from up to ``num_images`` of ``paths`` (a seeded sample); return alpha.

    ``meta`` is recorded with the sample's size in ``model.meta["init"]``. Raises ``Cancelled``
    between images when ``cancel()`` turns true. ``decoder``: see ``iter_images``.
    """
    if not paths:
        raise DatasetError("no images to initialise the NetVLAD layer from")
    pick = sample_positions(len(paths), init_cfg)
    chosen = [paths[i] for i in pick]
    device = model.device

    def images():
        for n, (_, tensor, _err) in enumerate(iter_images(chosen, extract_cfg, decoder), 1):
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
    alpha = _finish(model, samples, init_cfg, len(chosen), meta)
    return alpha


def pool_feature_map(model: PlaceModel, fmap: np.ndarray) -> np.ndarray:
    """The descriptor of a photo from its kept backbone map: ``PlaceModel.head`` (fp32)."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(fmap).unsqueeze(0).to(model.device, torch.float32)
        return model.head(x)[0].float().cpu().numpy()


def _finish(
    model: PlaceModel, samples: np.ndarray, init_cfg: InitConfig, images: int, meta
) -> float:
    alpha = init_netvlad(model, samples, init_cfg)
    record_init(model.meta, samples, images, alpha, meta)
    return alpha


def _per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """Descriptors to sample per image (``head.per_image``)."""
    clusters = getattr(model.pool, "num_clusters", 1)
    return per_image(clusters, init_cfg.descriptors_per_image, images)
