"""The image size an index's descriptors are made at: recorded, kept, and settled for an index
from before it was recorded.

A descriptor depends on the input size far more than on anything else a front can set (the same
lund photo at 160 and 640 px: cosine 0.15; at 480 and 640: 0.64; bf16 against fp32: 0.992; JPEG
draft decoding: 0.999), so two sizes never meet in one index: ``locate --image-size 160`` on a
640 index turned 5 of 5 located into not found, and an update at another size mixed them. The
other settings stay free (benchmarks/README.md, "what an index records").
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..config import ExtractConfig
from ..errors import LibraryIndexError
from .catalog import INDEXED
from .index import LibraryIndex

log = logging.getLogger(__name__)

#: A stored descriptor made at the size in use matches a fresh extraction at cosine 0.99+
#: (precision and decoding switches included); another size gives 0.72 at best (800 vs 640 px).
SAME_SIZE_COSINE = 0.95
PROBES = 3  # indexed photos tried when settling the size of an older index


def _has_descriptors(index: LibraryIndex) -> bool:
    return int(index.catalog.get_meta("store_rows", "0") or 0) > 0


def at_index_size(cfg: ExtractConfig, size: int) -> ExtractConfig:
    """``cfg`` at the index's ``size`` (everything else as asked)."""
    if cfg.image_size == size:
        return cfg
    return dataclasses.replace(cfg, image_size=size, max_pixels=max(cfg.max_pixels, size))


def size_note(index_size: int | None, cfg: ExtractConfig) -> str:
    """What a locate front says when it was asked for another size than its index's ("" if
    not): photos are described at the index's size, never at the one asked for. An index
    older than the record is described at ``cfg``'s size, as before; its next build settles it."""
    if index_size is None:
        return (
            "this index does not record the image size its descriptors were made at: update "
            f"the index once to record it (photos are described at {cfg.image_size} px until then)"
        )
    if not cfg.image_size_asked or index_size == cfg.image_size:
        return ""
    return (
        f"this index describes photos at {index_size} px, so photos are located at that size, "
        f"not at the {cfg.image_size} px asked for (descriptors of two sizes do not compare)"
    )


def resolve_image_size(
    index: LibraryIndex, cfg: ExtractConfig, keep_index_size: bool, warnings: list[str]
) -> ExtractConfig:
    """The extraction settings this build uses: the index's recorded size, whatever the default.

    A size asked for (``cfg.image_size_asked``) other than the index's is refused, as another
    model is, unless ``keep_index_size`` (the GUI's "Update index"): then the index keeps its
    own and says so. An index that holds no descriptor yet takes the size in use.
    """
    recorded = index.image_size
    if not _has_descriptors(index):
        if recorded != cfg.image_size:
            index.record_image_size(cfg.image_size)
        return cfg
    if recorded is None or recorded == cfg.image_size:
        return cfg  # an older index: settled once the model is loaded (settle_image_size)
    if cfg.image_size_asked and not keep_index_size:
        raise LibraryIndexError(
            f"this index describes photos at {recorded} px, not {cfg.image_size} px: leave out "
            f"--image-size to update it at {recorded} px, or name another --index folder to "
            f"index at {cfg.image_size} px"
        )
    if cfg.image_size_asked:
        msg = (
            f"the index keeps its image size of {recorded} px (descriptors of two sizes do not "
            f"compare); {cfg.image_size} px applies to a new index"
        )
        log.warning(msg)
        warnings.append(msg)
    return at_index_size(cfg, recorded)


def settle_image_size(
    index: LibraryIndex, model, cfg: ExtractConfig, library: Path, restart, warnings: list[str]
) -> None:
    """For an index from before its size was recorded, once the model is loaded: extract a few
    of its photos at ``cfg``'s size; stored rows that match record the size, others mean the
    descriptors were made at another one, and every photo is extracted again (``restart``)."""
    if index.image_size is not None:
        return
    if _has_descriptors(index):
        from ..model.extraction import extract_with
        from ..model.inference import is_inference_model

        if is_inference_model(model):  # ONNX Runtime: no torch
            extract = extract_with
        else:
            from ..model.features import extract
        rows = [r for r in index.catalog.rows(INDEXED, limit=PROBES)]
        fresh = {
            e.index: e.descriptor
            for e in extract(model, [library / r.path for r in rows], cfg)
            if e.descriptor is not None
        }
        if fresh:
            stored = index.store().read([rows[i].row for i in fresh])
            cosine = float(np.min(np.sum(stored * np.stack(list(fresh.values())), axis=1)))
            if cosine < SAME_SIZE_COSINE:
                restart(
                    f"this index's descriptors were not made at {cfg.image_size} px (it is "
                    "older than the record of its image size)",
                    "two image sizes",
                )
    index.record_image_size(cfg.image_size)
