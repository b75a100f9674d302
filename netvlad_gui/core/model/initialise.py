"""The paper's NetVLAD initialisation from a set of photos: k-means centroids and alpha.

Shared by the index builder (a library's photos) and training (the training database), so both
sample local descriptors and record the result the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..config import ExtractConfig, InitConfig
from ..errors import DatasetError
from ..photos.decoding import Decoder
from .features import Cancelled, iter_images
from .head import per_image, sample_from_feature_maps
from .network import PlaceModel, init_netvlad, sample_local_descriptors
from .onepass import (  # noqa: F401 - their old home
    DiskFullError,
    FeatureMaps,
    check_enough,
    initialise_one_pass,
    record_init,
)
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
    maps: Callable[[Sequence[int]], Iterable[Any]] | None = None,
) -> float:
    """Initialise from up to ``num_images`` of ``paths`` (a seeded sample); return alpha.

    ``meta`` is recorded with the sample's size in ``model.meta["init"]``. Raises ``Cancelled``
    between images when ``cancel()`` turns true. ``decoder``: see ``iter_images``. ``maps``
    gives the backbone maps (D, H', W') of the photos at the sampled positions, in order (None
    for one that cannot be read), instead of decoding them here: training computes them anyway.
    """
    if not paths:
        raise DatasetError("no images to initialise the NetVLAD layer from")
    pick = sample_positions(len(paths), init_cfg)
    chosen = [paths[i] for i in pick]
    device = model.device
    if maps is not None:
        model.eval()
        kept = (m for m in maps([int(i) for i in pick]) if m is not None)
        samples = sample_from_feature_maps(
            kept, _per_image(model, init_cfg, len(chosen)), init_cfg.seed, model.local_dim
        )
        return _finish(model, samples, init_cfg, len(chosen), meta)

    errors: dict[int, str] = {}

    def images():
        for n, (j, tensor, err) in enumerate(iter_images(chosen, extract_cfg, decoder), 1):
            if cancel is not None and cancel():
                raise Cancelled()
            if progress:
                progress(n, len(chosen))
            if tensor is not None:
                yield tensor.unsqueeze(0).to(device)
            else:
                errors[j] = err

    model.eval()
    samples = sample_local_descriptors(
        model, images(), _per_image(model, init_cfg, len(chosen)), init_cfg.seed
    )
    _check_enough(model, samples, chosen, errors)
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


def _check_enough(
    model: PlaceModel, samples: np.ndarray, chosen: Sequence, errors: dict[int, str]
) -> None:
    check_enough(getattr(model.pool, "num_clusters", 0), samples, chosen, errors)


def samples_per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """How many local descriptors the initialisation samples per photo of a sample of
    ``images`` (training re-samples a reference model the same way)."""
    return _per_image(model, init_cfg, images)


def _per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """Descriptors to sample per image (``head.per_image``)."""
    clusters = getattr(model.pool, "num_clusters", 1)
    return per_image(clusters, init_cfg.descriptors_per_image, images)
