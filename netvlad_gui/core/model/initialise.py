"""The paper's NetVLAD initialisation from a set of photos: k-means centroids and alpha.

Shared by the index builder (a library's photos) and training (the training database), so both
sample local descriptors and record the result the same way.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExtractConfig, InitConfig
from ..errors import DatasetError, NetvladError
from ..photos.decoding import Decoder
from ..photos.images import batched_by_shape
from .features import Cancelled, autocast_dtype, inference_model, iter_images
from .network import PlaceModel, init_netvlad, sample_from_feature_maps, sample_local_descriptors
from .pooling import KMEANS_POINTS_PER_CLUSTER
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


class DiskFullError(NetvladError, OSError):
    """The disk filled up while the one-pass initialisation kept its feature maps."""


class FeatureMaps:
    """The sampled photos' backbone maps, kept on disk (one .npy each) so memory stays flat.

    Keyed by the photo's position in the list given to ``initialise_one_pass``; a photo that
    could not be decoded has its reason instead. ``close()`` removes the folder.
    """

    def __init__(self, folder: Path, expected: int = 0):
        self.folder = Path(folder)
        self.expected = expected  # how many maps will be kept, to say how much space they need
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.errors: dict[int, str] = {}
        self._kept: set[int] = set()

    def put(self, key: int, fmap: np.ndarray) -> None:
        fmap = np.ascontiguousarray(fmap, dtype=np.float32)
        path = self.folder / f"{key}.npy"
        try:
            np.save(path, fmap)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or " requested and " in str(exc):
                raise DiskFullError(self._disk_full(fmap.nbytes)) from None
            raise
        self._kept.add(key)

    def _disk_full(self, each: int) -> str:
        """numpy says "115200 requested and 59360 written": say what, where and how much."""
        n = max(self.expected, len(self._kept) + 1)
        return (
            f"disk full in {self.folder}: setting up the model keeps the feature maps of the "
            f"{n} photos it samples there, {_size(each)} each (about {_size(n * each)} in all, "
            "removed when the build ends); free that much space and index again"
        )

    def get(self, key: int) -> np.ndarray:
        return np.load(self.folder / f"{key}.npy")

    def __contains__(self, key: int) -> bool:
        return key in self._kept or key in self.errors

    def keys(self) -> list[int]:
        return sorted(self._kept | set(self.errors))

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.0f} MB" if nbytes >= 1e6 else f"{max(nbytes / 1e3, 1):.0f} KB"


def initialise_one_pass(
    model: PlaceModel,
    paths: Sequence[str | os.PathLike],
    init_cfg: InitConfig,
    extract_cfg: ExtractConfig,
    folder: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    meta: dict[str, Any] | None = None,
    decoder: Decoder | None = None,
) -> FeatureMaps:
    """``initialise_from_images`` that keeps what the backbone computed for the sample.

    The sampled photos go through the backbone in batches, as extraction runs it (folded
    BatchNorm, memory layout, precision); their maps are kept in ``folder`` and sampled in the
    photos' order, so the centroids and alpha are those of ``initialise_from_images`` for the
    same seed, up to float noise. The caller pools the kept maps with the initialised model
    (``pool_feature_map``) instead of running the backbone over those photos again.
    Returns the maps keyed by position in ``paths``; the caller closes them. ``decoder``: a
    build's, which may have started on the sample while torch loaded (``iter_images``).
    """
    import torch

    if not paths:
        raise DatasetError("no images to initialise the NetVLAD layer from")
    pick = sample_positions(len(paths), init_cfg)
    chosen = [paths[i] for i in pick]
    maps = FeatureMaps(folder, expected=len(chosen))
    try:
        net = inference_model(model, extract_cfg)
        device = model.device
        done = 0

        def images() -> Iterator[tuple[int, torch.Tensor]]:
            nonlocal done
            for j, tensor, err in iter_images(chosen, extract_cfg, decoder):
                if cancel is not None and cancel():
                    raise Cancelled()
                if tensor is None:
                    maps.errors[int(pick[j])] = err
                    done += 1
                    continue
                yield int(j), tensor

        with torch.inference_mode():
            for js, batch in batched_by_shape(images(), extract_cfg.batch_size):
                batch = batch.to(device)
                if extract_cfg.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                feats = net.local_features(batch, autocast=autocast_dtype(extract_cfg, device.type))
                for j, fmap in zip(js, feats.float().cpu().numpy(), strict=True):
                    maps.put(int(pick[j]), fmap)
                done += len(js)
                if progress:
                    progress(done, len(chosen))
        kept = [int(pick[j]) for j in range(len(chosen)) if int(pick[j]) not in maps.errors]
        samples = sample_from_feature_maps(
            (maps.get(k) for k in kept),
            _per_image(model, init_cfg, len(chosen)),
            init_cfg.seed,
            model.local_dim,
        )
        unreadable = {
            j: maps.errors[int(pick[j])] for j in range(len(chosen)) if int(pick[j]) in maps.errors
        }
        _check_enough(model, samples, chosen, unreadable)
        _finish(model, samples, init_cfg, len(chosen), meta)
    except BaseException:
        maps.close()
        raise
    return maps


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
    model.meta["init"] = {
        "images": images,
        "descriptors": len(samples),
        "alpha": float(alpha),
        **(meta or {}),
    }
    log.info(
        "initialised NetVLAD from %d descriptors of %d images, alpha=%.2f",
        len(samples),
        images,
        alpha,
    )
    return alpha


def _check_enough(
    model: PlaceModel, samples: np.ndarray, chosen: Sequence, errors: dict[int, str]
) -> None:
    """Refuse, in words a user can act on, a sample too poor for k-means: one descriptor per
    cluster at least. A library whose every photo was unreadable once ended in an internal
    error ("NetVLAD init needs at least 64 non-zero descriptors")."""
    clusters = getattr(model.pool, "num_clusters", 0)
    if len(samples) >= clusters:
        return
    if len(errors) == len(chosen):
        j = min(errors)
        raise DatasetError(
            f"none of the {len(chosen)} photos sampled to set up the model could be read (first: "
            f"{Path(chosen[j]).name}: {errors[j]}); add readable photos (JPEG, PNG, HEIC…) and "
            "index again"
        )
    raise DatasetError(
        f"too few photos to set up the model: {len(chosen) - len(errors)} readable photos gave "
        f"{len(samples)} local descriptors, and its {clusters} clusters need at least one each; "
        "add photos to the library, or choose a model that is already trained"
    )


def samples_per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """How many local descriptors the initialisation samples per photo of a sample of
    ``images`` (training re-samples a reference model the same way)."""
    return _per_image(model, init_cfg, images)


def _per_image(model: PlaceModel, init_cfg: InitConfig, images: int) -> int:
    """Descriptors to sample per image: the configured count, more for a small library, so that
    k-means gets enough samples per cluster (19 photos x 100 is too few for 64 clusters)."""
    clusters = getattr(model.pool, "num_clusters", 1)
    wanted = math.ceil(KMEANS_POINTS_PER_CLUSTER * clusters / max(images, 1))
    return max(init_cfg.descriptors_per_image, wanted)
