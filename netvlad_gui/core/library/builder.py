"""Building and updating a library index: the build's stages in order.

scan (scan.py) -> the model (buildmodel.py: the index's own, or a new one initialised from the
library) -> extract the pending photos -> finalise (calibration.py, and the saved search index).
The steps commit as they go (catalogue rows, descriptor rows, the initialised model), so that a
second run only does what is missing: new or changed photos, or the rest of a killed build.

The network code (torch, torchvision: 3-4 s to import) is imported only when there is a photo
to extract: a run that finds nothing new scans, checks model.pt's file stamp and stops.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cancel import Cancelled
from ..config import DistributedConfig, ExtractConfig, IndexConfig, InitConfig
from ..errors import FileWriteError, LibraryIndexError
from ..photos.decoding import Decoder
from .buildlock import lock_index as _lock
from .buildmodel import (
    KEPT_MAPS_DIR,
    ModelJob,
    nothing_to_extract,
    photos_needed_first,
    prepare_engine_model,
    restart_all,
)
from .calibration import FINALIZED_KEY, calibrate, finalized_stamp
from .catalog import FAILED, PENDING, CatalogDamagedError, display_name
from .index import CATALOG_FILE, MODEL_FILE, LibraryIndex, StageProgress
from .inputsize import resolve_image_size, settle_image_size
from .patchfill import PatchFill
from .repair import record_checked, recover_lost_rows, requeue_damaged_rows
from .scan import scan_library
from .searchindex import remove_saved
from .store import NOT_UNIT, unit_rows

log = logging.getLogger(__name__)

COMMIT_EVERY = 32  # images per catalogue transaction: bounds the work a kill can lose
NON_FINITE = "the model gave a descriptor with NaN or infinity (broken weights?); not indexed"


def descriptor_problem(descriptor: np.ndarray) -> str:
    """Why a freshly extracted descriptor must not be stored ("" when it is sound)."""
    if not np.isfinite(descriptor).all():
        return NON_FINITE  # a NaN row would match nothing and poison exact search
    if not unit_rows(descriptor.reshape(1, -1))[0]:
        return NOT_UNIT
    return ""


@dataclass
class BuildSummary:
    library: str
    index_dir: str
    model: str
    total: int = 0  # image files found
    extracted: int = 0  # new or changed photos indexed by this run
    indexed: int = 0  # photos in the index after this run
    with_gps: int = 0
    no_gps: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0
    elapsed_s: float = 0.0
    bytes_per_image: float = 0.0
    cancelled: bool = False
    cancel_note: str = ""  # what a cancelled build kept, in words the fronts show as they are
    warnings: list[str] = field(default_factory=list)  # one line each: what the build worked round

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["no_gps"] = [{"path": p, "reason": r} for p, r in self.no_gps]
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        return d


class _UpToDate(Exception):
    """No photo to extract and model.pt as recorded: the model is not even loaded."""


def build_index(
    library: str | os.PathLike,
    index_dir: str | os.PathLike | None = None,
    *,
    model_spec: str | os.PathLike | None = None,
    backbone_weights: str | None = None,
    extract_cfg: ExtractConfig | None = None,
    init_cfg: InitConfig | None = None,
    index_cfg: IndexConfig | None = None,
    distributed: DistributedConfig | None = None,
    progress: StageProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    keep_index_model: bool = False,
) -> BuildSummary:
    """Index (or update the index of) a folder of photos. Safe to cancel, kill and re-run.

    ``index_cfg`` (recorded in the index, so that later searches use it too) picks the search
    index type; by default it is chosen by the library's size. ``distributed`` extracts on Ray
    (``core/library/distributed.py``) instead of in this process; the index comes out the same.
    An index that has a model keeps it: asking for another one is an error, unless
    ``keep_index_model`` (the GUI's "update"), which builds on with the index's own model.
    ``progress(stage, done, total)`` reports the stages in order: "scan", "model" (0 of 1 while
    torch loads and the model is read: seconds with nothing else to show), "init" (a new
    model's sampled photos), "extract", "finalize".
    """
    from .status import no_gps_photos, resolve_index_dir

    t0 = time.perf_counter()
    extract_cfg = (extract_cfg or ExtractConfig()).validate()  # settings before any work
    init_cfg = (init_cfg or InitConfig()).validate()
    if index_cfg is not None:
        index_cfg.validate()
    if distributed is not None:
        distributed.validate()
        from .distributed import require_ray

        require_ray()  # before any work: say how to install it

    library = Path(library).expanduser().resolve()
    if not library.is_dir():
        raise LibraryIndexError(f"library folder not found: {library}")
    index_dir = resolve_index_dir(library, index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(index_dir)
    warnings: list[str] = []
    kept: dict = {}  # the one-pass initialisation's backbone maps, removed at the end
    decoder = Decoder(extract_cfg)  # its threads start with the first prefetch
    try:
        index = _open_for_build(index_dir, warnings)
    except BaseException:
        lock.close()
        raise
    try:
        recorded = index.library
        if recorded is not None and recorded != library:
            raise LibraryIndexError(
                f"{index_dir} indexes {recorded}, not {library}; choose another --index folder"
            )
        index.catalog.set_meta("library", str(library))
        if index_cfg is not None:
            index.record_config(index_cfg)
        summary = BuildSummary(str(library), str(index_dir), "", warnings=warnings)
        shutil.rmtree(index_dir / KEPT_MAPS_DIR, ignore_errors=True)  # a killed build's
        summary.total, summary.removed = scan_library(index, library, progress, warnings)
        extract_cfg = resolve_image_size(index, extract_cfg, keep_index_model, warnings)
        try:
            if nothing_to_extract(index, model_spec, keep_index_model, extract_cfg):
                raise _UpToDate
            if progress:  # starting the engine and loading the model take a moment: say so
                progress("model", 0, 1)
            # The core the engine's start leaves idle decodes the first photos meanwhile.
            first = photos_needed_first(
                index, library, model_spec, init_cfg, decoder.ahead, distributed is None
            )
            decoder.prefetch(first)
            job = ModelJob(
                index,
                model_spec,
                backbone_weights,
                init_cfg,
                extract_cfg,
                library,
                progress,
                cancel,
                keep_index_model,
                warnings,
                kept if distributed is None else None,
                decoder,
            )
            model, extract_cfg = prepare_engine_model(job)
            summary.model = index.model_name

            def restart(why: str, mixed: str) -> None:
                restart_all(index, warnings, why, mixed)

            settle_image_size(index, model, extract_cfg, library, restart, warnings)
            if index.dim is None:
                index.catalog.set_meta("dim", str(model.dim))
            elif index.dim != model.dim:
                raise LibraryIndexError(
                    f"model gives {model.dim}-D descriptors, index holds {index.dim}-D"
                )
            pending = index.catalog.rows(PENDING)  # after the model check: it may add photos
            if distributed is None:
                summary.extracted = _extract_pending(
                    index, model, library, pending, extract_cfg, progress, cancel, kept, decoder
                )
            else:
                from .distributed import extract_pending_ray

                summary.extracted = extract_pending_ray(
                    index, model, library, pending, extract_cfg, progress, cancel, distributed
                )
        except _UpToDate:
            summary.model = index.model_name
        except Cancelled:
            summary.cancelled = True
            if not (index.dir / MODEL_FILE).exists():
                summary.cancel_note = (
                    "no photo is indexed yet: it stopped while fitting NetVLAD, and the next "
                    "build starts the fitting again"
                )
        index.invalidate()
        _compact(index, warnings)
        if progress:
            progress("finalize", 0, 1)
        if index.dim is not None and finalized_stamp(index) != index.catalog.get_meta(
            FINALIZED_KEY
        ):
            index.catalog.set_meta("calibration", json.dumps(calibrate(index)))

            def report(done: int, total: int) -> None:
                if progress:
                    progress("finalize", done, total)

            index.refresh_saved_search(report)
            index.catalog.set_meta(FINALIZED_KEY, finalized_stamp(index))
        record_checked(index)
        stats = index.stats()
        summary.model = summary.model or index.model_name
        summary.indexed = stats.indexed
        if summary.cancelled and not summary.cancel_note:
            summary.cancel_note = (
                f"the {stats.indexed} photos indexed so far are kept; the next build does the rest"
            )
        summary.with_gps = stats.with_gps
        summary.failed = stats.failures
        summary.no_gps = no_gps_photos(index)
        summary.bytes_per_image = stats.bytes_per_image
        summary.elapsed_s = time.perf_counter() - t0
        if progress:
            progress("finalize", 1, 1)
        return summary
    finally:
        decoder.close()
        if kept.get("maps") is not None:
            kept["maps"].close()
        index.close()
        lock.close()


def _open_for_build(index_dir: Path, warnings: list[str]) -> LibraryIndex:
    """Open the index for writing (under the build lock); a damaged catalogue is set aside.

    The catalogue is what ties descriptor rows to photos, so with it gone the descriptors are
    useless: they are set aside with it, and every photo is extracted again. model.pt is kept.
    """
    try:
        index = LibraryIndex(index_dir, create=True)
    except CatalogDamagedError:
        index = None
    else:
        try:
            index.catalog.check()
        except CatalogDamagedError:
            index.close()
            index = None
    if index is not None:
        index.remove_orphan_stores()
        recover_lost_rows(index, warnings)
        requeue_damaged_rows(index, warnings)
        return index
    folder = Path(index_dir).expanduser()
    aside = folder / f"{CATALOG_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(folder / CATALOG_FILE, aside)
    for name in (f"{CATALOG_FILE}-wal", f"{CATALOG_FILE}-shm"):
        (folder / name).unlink(missing_ok=True)
    remove_saved(folder)
    for p in folder.glob("descriptors*.f32"):
        p.unlink()
    msg = (
        f"the index catalogue was damaged: set aside as {aside.name}; "
        "every photo is extracted again"
    )
    log.warning(msg)
    warnings.append(msg)
    index = LibraryIndex(index_dir, create=True)
    return index


def _compact(index: LibraryIndex, warnings: list[str]) -> None:
    """Compact the store when due; a folder without room for the copy only delays it.

    Every photo is indexed and searchable without it: failing the build for it made every
    later `netvlad index` exit 1 on a full disk.
    """
    try:
        index.compact_store()
    except FileWriteError as exc:
        msg = (
            f"skipped compacting the descriptor store ({exc}); every photo stays indexed and "
            "the unused rows are dropped by a later build"
        )
        log.warning(msg)
        warnings.append(msg)


def _extract_pending(
    index, model, library, pending, extract_cfg, progress, cancel, kept=None, decoder=None
) -> int:
    """Extract the pending photos and store their descriptors, committing as it goes.

    Photos whose backbone maps the one-pass initialisation kept (``kept``) are only pooled.
    Where the engine's maps are the verifier's, each photo's patch features go to the index's
    ``patches.sqlite`` as well (patchfill.py), so that the first verified locate computes none.
    """
    if not pending:
        return 0
    store = index.store()
    fill = PatchFill.open(index, model, extract_cfg)
    paths = [library / r.path for r in pending]
    done_ok: list[tuple[int, np.ndarray]] = []
    done_bad: list[tuple[int, str]] = []
    extracted = 0

    def commit():
        nonlocal extracted
        if done_ok:
            first = store.append(np.stack([d for _, d in done_ok]))
            indexed = [(pending[i].id, first + n) for n, (i, _) in enumerate(done_ok)]
        else:
            indexed = []
        index.catalog.mark_done(
            indexed,
            [(pending[i].id, err) for i, err in done_bad],
            {"store_rows": str(store.rows)},
        )
        extracted += len(indexed)
        done_ok.clear()
        done_bad.clear()
        if fill is not None:
            fill.flush()

    def report(done, total):
        if progress:
            progress("extract", done, total)

    maps = kept.get("maps") if kept else None
    where = {rel: n for n, rel in enumerate(kept["paths"])} if maps is not None else {}
    keys = [where.get(r.path) for r in pending]
    items = _descriptors(
        model, paths, extract_cfg, report, cancel, maps, keys, decoder, fill is not None
    )
    try:
        for item in items:
            error = item.error
            if item.descriptor is not None and not error:
                error = descriptor_problem(item.descriptor)
            if item.descriptor is not None and not error:
                done_ok.append((item.index, item.descriptor))
                if fill is not None:
                    fill.add(paths[item.index], item.local_map, item.work_size)
            else:
                log.warning("skipped %s: %s", display_name(str(paths[item.index])), error)
                done_bad.append((item.index, error))
            if len(done_ok) + len(done_bad) >= COMMIT_EVERY:
                commit()
    finally:
        try:
            commit()  # keep everything finished before a cancel or an error
        finally:
            if fill is not None:
                fill.close()
    return extracted


def _descriptors(
    model, paths, extract_cfg, report, cancel, maps=None, keys=(), decoder=None, with_maps=False
):
    """``Extracted`` for each of ``paths`` (index into ``paths``): pooled from the kept backbone
    map where ``keys[i]`` names one in ``maps``, else through the whole network. ``with_maps``
    (ONNX Runtime only): each carries its backbone map and the size of its pixels too."""
    from ..model.extraction import Extracted, extract_with
    from ..model.inference import is_inference_model

    if is_inference_model(model):  # ONNX Runtime: no torch

        def extract(model, paths, cfg, **kw):
            return extract_with(model, paths, cfg, **kw)

        def pool_feature_map(model, fmap):
            return model.pool_maps(fmap[None])[0]
    else:
        from ..model.features import extract
        from ..model.initialise import pool_feature_map

    keys = list(keys) or [None] * len(paths)
    pooled = [i for i, k in enumerate(keys) if maps is not None and k is not None and k in maps]
    rest = [i for i, k in enumerate(keys) if not (maps is not None and k is not None and k in maps)]
    for done, i in enumerate(pooled, 1):
        if cancel is not None and cancel():
            raise Cancelled()
        key = keys[i]
        if key in maps.errors:
            yield Extracted(i, None, maps.errors[key])
        else:
            fmap = maps.get(key)
            desc = pool_feature_map(model, fmap)
            if with_maps:
                yield Extracted(i, desc, local_map=fmap, work_size=maps.sizes.get(key))
            else:
                yield Extracted(i, desc)
        report(done, len(paths))
    if rest:

        def report_rest(done, total):
            report(len(pooled) + done, len(paths))

        sub = [paths[i] for i in rest]
        kw = {"with_maps": True} if with_maps else {}
        items = extract(
            model, sub, extract_cfg, progress=report_rest, cancel=cancel, decoder=decoder, **kw
        )
        for item in items:
            yield Extracted(
                rest[item.index], item.descriptor, item.error, item.local_map, item.work_size
            )


__all__ = ["FAILED", "BuildSummary", "build_index"]
