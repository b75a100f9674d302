"""A new model's NetVLAD initialisation in the same pass as the extraction, for any engine.

The sampled photos go through the backbone once; their maps are kept on disk, sampled for
k-means (faiss) and later pooled by the initialised head instead of being run again. Through an
:class:`~netvlad_gui.core.model.inference.InferenceModel`, so that with ONNX Runtime a new
library is initialised and indexed without torch.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cancel import Cancelled
from ..config import ExtractConfig, InitConfig
from ..errors import DatasetError, NetvladError
from ..photos.decoding import Decoder
from .extraction import batched_pixels, decoded
from .head import per_image, sample_from_feature_maps
from .inference import as_inference_model
from .sample import sample_positions

log = logging.getLogger(__name__)


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
        self.sizes: dict[int, tuple[int, int]] = {}  # (w, h) of the pixels each map is of
        self._kept: set[int] = set()

    def put(self, key: int, fmap: np.ndarray, work_size: tuple[int, int] | None = None) -> None:
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
        if work_size is not None:
            self.sizes[key] = work_size

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
    model,
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
    """Initialise ``model``'s NetVLAD from up to ``init_cfg.num_images`` of ``paths`` (a seeded
    sample), keeping what the backbone computed for them.

    ``model`` is an InferenceModel, or a torch PlaceModel (run as extraction runs it: folded
    BatchNorm, memory layout, precision). The maps are kept in ``folder`` and sampled in the
    photos' order, so the centroids and alpha are those of ``initialise_from_images`` for the
    same seed, up to float noise. The caller pools the kept maps with the initialised model
    instead of running the backbone over those photos again. Returns the maps keyed by position
    in ``paths``; the caller closes them. ``decoder``: a build's, which may have started on the
    sample before the model was ready.
    """
    if not paths:
        raise DatasetError("no images to initialise the NetVLAD layer from")
    net = as_inference_model(model, extract_cfg)
    pick = sample_positions(len(paths), init_cfg)
    chosen = [paths[i] for i in pick]
    maps = FeatureMaps(folder, expected=len(chosen))
    try:
        done = 0

        def images() -> Iterator[tuple[int, np.ndarray]]:
            nonlocal done
            for j, pixels, err in decoded(chosen, extract_cfg, decoder):
                if cancel is not None and cancel():
                    raise Cancelled()
                if pixels is None:
                    maps.errors[int(pick[j])] = err
                    done += 1
                    continue
                yield int(j), pixels

        for js, batch in batched_pixels(images(), extract_cfg.batch_size):
            for j, fmap in zip(js, net.maps_of(batch), strict=True):
                maps.put(int(pick[j]), fmap, (batch.shape[2], batch.shape[1]))
            done += len(js)
            if progress:
                progress(done, len(chosen))
        kept = [int(pick[j]) for j in range(len(chosen)) if int(pick[j]) not in maps.errors]
        samples = sample_from_feature_maps(
            (maps.get(k) for k in kept),
            per_image(net.num_clusters, init_cfg.descriptors_per_image, len(chosen)),
            init_cfg.seed,
            net.local_dim,
        )
        unreadable = {
            j: maps.errors[int(pick[j])] for j in range(len(chosen)) if int(pick[j]) in maps.errors
        }
        check_enough(net.num_clusters, samples, chosen, unreadable)
        alpha = net.init_netvlad(samples, init_cfg)
        record_init(net.meta, samples, len(chosen), alpha, meta)
    except BaseException:
        maps.close()
        raise
    return maps


def check_enough(
    clusters: int, samples: np.ndarray, chosen: Sequence, errors: dict[int, str]
) -> None:
    """Refuse, in words a user can act on, a sample too poor for k-means: one descriptor per
    cluster at least. A library whose every photo was unreadable once ended in an internal
    error ("NetVLAD init needs at least 64 non-zero descriptors")."""
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


def record_init(model_meta: dict, samples: np.ndarray, images: int, alpha: float, meta) -> None:
    """What the initialisation used, in the model's meta (and the log)."""
    model_meta["init"] = {
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
