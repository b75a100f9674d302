"""From a photo to its evidence: describe it with the model, search the library, check geometry.

The ``Locator`` holds what locating needs warm (the model, the open index, its calibration and a
verifier). A ``LocateSession`` (session.py) asks it for each step once per photo, and answer.py
turns the evidence into a result.

The model is an ``InferenceModel`` (core/model/inference.py): ONNX Runtime without torch where
the index's descriptors are fp32 (the rule ``runtime.choose_engine`` applies), torch otherwise;
pixels in, numpy arrays out, so nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ExtractConfig, LocateConfig, VerifyConfig
from ..errors import ConfigError, IndexModelMissingError
from ..library.index import LibraryIndex, SearchHit
from ..library.inputsize import at_index_size
from ..library.patchstore import PatchStore
from ..library.status import NO_MODEL
from ..model.ckptfile import CheckpointFormatError
from ..model.extraction import NON_FINITE
from ..model.inference import StageProgress, open_model
from ..model.runtime import Engine, asked_precision, choose_engine
from ..photos.images import ImageLoadError, load_image, to_pixels
from .answer import Prediction, predict
from .result import LocateResult, Match
from .verify import Verification, Verifier, oriented_size

__all__ = ["Description", "LocateResult", "Locator", "Match", "Prediction", "predict"]


@dataclass
class Description:
    """One photo as the engine sees it: decoded once, described once (see ``Locator.describe``)."""

    image: Image.Image  # decoded at the model's input size
    original_size: tuple[int, int]  # (w, h) as displayed, for drawing inlier points
    descriptor: np.ndarray  # the global descriptor (float32, unit length)
    local_map: np.ndarray | None = None  # the backbone's feature map (D, h, w), when asked for


#: VerifyConfig fields that change what a Verifier computes or caches; the others (how many
#: candidates, the verdict's counts) are read per photo from the session's config.
_VERIFIER_FIELDS = (
    "features",
    "geometry",
    "sift_size",
    "max_features",
    "sift_contrast",
    "ratio",
    "ransac_px",
    "cache_size",
    "disk_cache_mb",
)


class Locator:
    """Model + index (+ verifier), loaded once: what the CLI and the GUI's worker keep warm."""

    def __init__(
        self,
        index: LibraryIndex,
        *,
        extract_cfg: ExtractConfig | None = None,
        locate_cfg: LocateConfig | None = None,
        progress: StageProgress | None = None,
    ):
        self.index = index
        ec = (extract_cfg or ExtractConfig()).validate()
        # Photos are described at the size the index's descriptors were made at, whatever the
        # front asked for (open_session says so when it asked for another).
        self.extract_cfg = at_index_size(ec, index.image_size or ec.image_size)
        self.cfg = (locate_cfg or LocateConfig()).validate()
        if not index.model_path.exists():
            raise IndexModelMissingError(f"cannot locate with the index in {index.dir}: {NO_MODEL}")
        self.engine = locate_engine(index, self.extract_cfg)
        # ``progress`` hears of the one-off export of a missing graph (stage "prepare").
        self.model = open_model(index.model_path, self.extract_cfg, self.engine, progress=progress)
        self.calibration = index.calibration()
        self.library_has_gps = index.catalog.counts()["with_gps"] > 0
        self._store: PatchStore | None = None  # opened by the first verification
        # Built even when verification is off by default: a session may ask for it.
        self.verifier = self._verifier(self.cfg.verify)

    def _verifier(self, cfg: VerifyConfig) -> Verifier:
        return Verifier(
            self.model,
            self.extract_cfg,
            cfg,
            store=_LazyStore(self, cfg.disk_cache_mb) if cfg.disk_cache_mb else None,
            model_key=self.model_key(),
        )

    def model_key(self) -> str:
        """The index's model key (``LibraryIndex.model_key``) for this Locator's engine."""
        return self.index.model_key(self.engine.runtime, self.engine.precision)

    def patch_store(self, disk_cache_mb: int) -> PatchStore:
        """The index's store of references' features, opened once, bounded by the last asked."""
        if self._store is None:
            self._store = PatchStore(self.index.dir, disk_cache_mb * 1024 * 1024)
        self._store.max_bytes = disk_cache_mb * 1024 * 1024
        return self._store

    def close(self) -> None:
        """Close the store of features and the index."""
        if self._store is not None:
            self._store.close()
            self._store = None
        self.index.close()

    # ---- the steps a session takes, once each per photo ------------------------------------

    def describe(self, path: str | os.PathLike, *, with_map: bool = False) -> Description:
        """Decode ``path`` and describe it; a bad photo raises ImageLoadError with the reason."""
        ec = self.extract_cfg
        img = load_image(Path(path), ec.image_size, ec.max_pixels, draft=ec.jpeg_draft)
        return self.describe_image(img, oriented_size(path), with_map=with_map)

    def describe_image(
        self, img: Image.Image, original_size: tuple[int, int], *, with_map: bool = False
    ) -> Description:
        """The global descriptor of a decoded photo (or video frame) and, ``with_map``, the
        backbone's feature map the patch features come from: one forward pass for both."""
        descs, maps = self.model.describe_pixels(to_pixels(img)[None], with_map=with_map)
        desc = descs[0]
        if not np.isfinite(desc).all():
            raise ImageLoadError(NON_FINITE)
        return Description(img, original_size, desc, None if maps is None else maps[0])

    def search(self, descriptor: np.ndarray, k: int) -> list[SearchHit]:
        """The library's ``k`` most similar photos, best first."""
        return self.index.search(descriptor[None, :], k)[0]

    def verifier_for(self, cfg: VerifyConfig) -> Verifier:
        """A verifier computing what ``cfg`` asks for; the warm one (and its cache) when it does."""
        have = self.verifier.cfg
        if any(getattr(have, f) != getattr(cfg, f) for f in _VERIFIER_FIELDS):
            self.verifier = self._verifier(cfg)
        return self.verifier

    def verify(
        self, described: Description, hits: list[SearchHit], cfg: VerifyConfig
    ) -> list[Verification | None]:
        """Verification of the first ``cfg.top_k`` hits (None where a reference is unreadable)."""
        verifier = self.verifier_for(cfg)
        query = verifier.features_of_image(
            described.image, described.original_size, described.local_map
        )
        return verifier.verify(query, [h.path for h in hits[: cfg.top_k]])


class _LazyStore:
    """The Locator's PatchStore, opened on the first reference a verifier asks for (a locate
    without verification never touches the file)."""

    def __init__(self, locator: Locator, disk_cache_mb: int):
        self.locator, self.mb = locator, disk_cache_mb

    def get(self, keys, recipe):
        return self.locator.patch_store(self.mb).get(keys, recipe)

    def put(self, items, recipe):
        self.locator.patch_store(self.mb).put(items, recipe)


def locate_engine(index: LibraryIndex, cfg: ExtractConfig) -> Engine:
    """What describes the photos located in ``index``: the precision its descriptors were made
    in binds (a query of another precision would score against them with noise: cosine
    0.97-0.99 between bf16 and fp32), and fp32 runs in ONNX Runtime. A precision forced
    against the index's is refused (ConfigError), never silently mixed."""
    made = index.descriptor_engine()
    asked = asked_precision(cfg)
    if made is not None and asked is not None and asked != made["precision"]:
        raise ConfigError(
            f"this index's descriptors were made in {made['precision']}; locate with --precision "
            f"{made['precision']} or auto (its photos described in {asked} would not compare "
            f"with them), or index it again with --precision {asked}"
        )
    if made is not None:
        return choose_engine(cfg, made_with=made["precision"])
    from ..model.ortmodel import ModelFile

    try:
        backbone = ModelFile.read(index.model_path).backbone
    except (OSError, CheckpointFormatError):
        backbone = ""
    return choose_engine(cfg, backbone=backbone)


def index_engines_info(index: LibraryIndex, cfg: ExtractConfig) -> dict:
    """What made ``index``'s descriptors, and what would describe photos located in it (and
    why), for ``netvlad info``."""
    out: dict = {"descriptors_made_with": index.descriptor_engine()}
    try:
        out["locate_runs"] = locate_engine(index, cfg).to_json()
    except ConfigError as exc:
        out["locate_runs"] = {"error": str(exc)}
    return out
