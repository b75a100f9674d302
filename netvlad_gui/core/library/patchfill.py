"""A build fills the index's ``patches.sqlite`` from the forward pass it already runs.

A library's first verified locate used to compute its K references' backbone maps (a forward
pass each: ~0.9 s of a 1.5 s cold ``netvlad locate``); the build computes every photo's map
anyway to pool its descriptor, so it keeps each one's patch features in the store
(patchstore.py) under the recipe the index's Locator computes (``model.patches.feature_recipe``
with the index's ``model_key``): the first locate then finds them there, and answers the same.

Only where that is exact: ONNX Runtime fp32 (the engine a Locator of an fp32 index runs, so its
maps are the verifier's), the default ``patch`` features, pixels from the build's decoder (the
verifier's ``load_image`` with the same size, ``max_pixels`` and draft setting, all in the
recipe). The store's bound (``VerifyConfig.disk_cache_mb``) stops the filling, never evicts; a
read-only, locked or full store costs the build nothing but the fill.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import numpy as np

from ..config import ExtractConfig, VerifyConfig
from ..model.patches import LocalFeatures, feature_recipe, patch_features
from ..photos.filestamp import identity, identity_text
from ..photos.images import oriented_size
from .patchstore import PatchStore

log = logging.getLogger(__name__)

#: The only engine whose maps are the Locator's (choose_engine: fp32 runs in ONNX Runtime).
FILL_RUNTIME = "onnxruntime"


class PatchFill:
    """Patch features of the photos a build describes, written to the store as it commits."""

    def __init__(self, store: PatchStore, recipe: str):
        self.store, self.recipe = store, recipe
        self.room = store.max_bytes - store.stored_bytes()  # filled up to the bound, no further
        self.full = self.room <= 0
        self.added = 0
        self._pending: list[tuple[str, str, LocalFeatures]] = []

    @classmethod
    def open(cls, index, model, extract_cfg: ExtractConfig) -> PatchFill | None:
        """The filler for this build, or None where filling would not be exact or cannot be."""
        cfg = VerifyConfig()
        if cfg.features != "patch" or not cfg.disk_cache_mb:
            return None
        if getattr(model, "runtime", None) != FILL_RUNTIME or not hasattr(model, "precision"):
            return None
        try:
            recipe = feature_recipe(
                extract_cfg, cfg, index.model_key(model.runtime, model.precision)
            )
            store = PatchStore(index.dir, cfg.disk_cache_mb * 1024 * 1024)
        except (OSError, sqlite3.Error) as exc:
            log.info("references' features not kept at index time: %s", exc)
            return None
        if not store.writable:
            store.close()
            return None
        return cls(store, recipe)

    def add(self, path: str | os.PathLike, local_map: np.ndarray, work_size) -> None:
        """Keep ``path``'s features, made from ``local_map`` of its pixels of ``work_size``."""
        if self.full or local_map is None or work_size is None:
            return
        try:
            st = os.stat(path)
            feats = patch_features(local_map, tuple(work_size), oriented_size(Path(path)))
        except (OSError, ValueError):  # gone or unreadable since decoded: the verifier's miss
            return
        if feats.nbytes > self.room:
            self.full = True  # the bound is the user's: what does not fit is made on demand
            return
        self.room -= feats.nbytes
        self._pending.append((str(path), identity_text(identity(path, st)), feats))

    def flush(self) -> None:
        """Write what was added (one transaction); the store never raises for its file."""
        if self._pending:
            self.store.put(self._pending, self.recipe)
            self.added += len(self._pending)
            self._pending.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.store.close()
