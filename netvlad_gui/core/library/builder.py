"""Building and updating a library index: scan, initialise the model, extract, finalise.

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
from ..config import (
    DEFAULT_MODEL,
    NEGATIVE_RADIUS_M,
    DistributedConfig,
    ExtractConfig,
    IndexConfig,
    InitConfig,
    ModelConfig,
)
from ..errors import LibraryIndexError
from ..model.sample import sample_positions
from ..photos import geo
from ..photos.decoding import Decoder
from .buildlock import lock_index as _lock
from .catalog import FAILED, INDEXED, PENDING, CatalogDamagedError, display_name
from .index import (
    CATALOG_FILE,
    INDEX_CONFIG_KEY,
    MODEL_FILE,
    MODEL_FILE_KEY,
    MODEL_SHA_KEY,
    LibraryIndex,
    StageProgress,
    file_sha256,
    model_state_sha,
)
from .scan import SIDECAR_STAMP_KEY, scan_library
from .searchindex import META_KEY as SEARCH_META_KEY
from .searchindex import remove_saved

log = logging.getLogger(__name__)

COMMIT_EVERY = 32  # images per catalogue transaction: bounds the work a kill can lose
NON_FINITE = "the model gave a descriptor with NaN or infinity (broken weights?); not indexed"
KEPT_MAPS_DIR = ".init-maps"  # the sampled photos' backbone maps, while a new library is built
FINALIZED_KEY = "finalized_from"  # _finalized_stamp when calibration and search were last made


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


def _prepare_model(
    index: LibraryIndex,
    model_spec,
    backbone_weights,
    device,
    init_cfg,
    extract_cfg,
    library: Path,
    progress,
    cancel,
    keep_index_model: bool = False,
    warnings: list[str] | None = None,
    kept: dict | None = None,
    decoder=None,
):
    """The index's own model if it has one; else a new one, initialised from this library.

    With ``kept`` (a dict), a new model is initialised in one pass: the sampled photos' backbone
    maps are kept, and ``kept`` gets ``{"maps": FeatureMaps, "paths": [catalogue path, ...]}``
    so that the extraction pools them instead of running the backbone over them again.
    ``decoder`` (core/photos/decoding.py) may have started on the sample while torch loaded.

    Descriptors of two models are never mixed: the catalogue records a hash of the weights
    that made its descriptors, and when model.pt is missing (a backup or sync tool lost it) or
    holds other weights, every photo is extracted again with the model now used, and the build
    says so in ``warnings``.
    """
    from ..model.checkpoint import load_checkpoint
    from ..model.initialise import initialise_from_images, initialise_one_pass
    from ..model.resolve import resolve_model

    warnings = warnings if warnings is not None else []
    path = index.dir / MODEL_FILE
    if path.exists():
        model = load_checkpoint(path)
        if progress:
            progress("model", 1, 1)
        recorded = index.model_name
        if keep_index_model and model_spec is not None and str(model_spec) != recorded:
            log.info("%s keeps its model %s (asked for %s)", index.dir, recorded, model_spec)
        elif model_spec is not None and recorded and str(model_spec) != recorded:
            raise LibraryIndexError(
                f"this index was built with model {recorded!r}, not {str(model_spec)!r}; "
                "use another --index folder (or delete this one) to index with a new model"
            )
        made_by = index.catalog.get_meta(MODEL_SHA_KEY)
        if made_by is None or made_by != model_state_sha(model):
            if made_by is not None:
                _restart_all(
                    index,
                    warnings,
                    f"{path} is not the model that made this index's descriptors",
                )
            index.record_model(model, recorded or str(model_spec or MODEL_FILE))
        return model.to(device)
    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    model = resolve_model(spec, backbone_weights).to(device)
    if progress:
        progress("model", 1, 1)
    if not model.is_initialised:
        rels = [row.path for row in index.catalog.rows()]
        paths = [library / rel for rel in rels]
        if not paths:
            raise LibraryIndexError(f"no images in {library} to initialise the NetVLAD layer from")
        init_progress = (lambda n, total: progress("init", n, total)) if progress else None
        if kept is not None:
            kept["maps"] = initialise_one_pass(
                model,
                paths,
                init_cfg,
                extract_cfg,
                index.dir / KEPT_MAPS_DIR,
                progress=init_progress,
                cancel=cancel,
                meta={"library": str(library)},
                decoder=decoder,
            )
            kept["paths"] = rels
        else:
            initialise_from_images(
                model,
                paths,
                init_cfg,
                extract_cfg,
                progress=init_progress,
                cancel=cancel,
                meta={"library": str(library)},
                decoder=decoder,
            )
    model = model.cpu()
    made_by = index.catalog.get_meta(MODEL_SHA_KEY)
    has_descriptors = int(index.catalog.get_meta("store_rows", "0") or 0) > 0
    if has_descriptors and (made_by is None or made_by != model_state_sha(model)):
        _restart_all(index, warnings, f"{path} is missing and a new model was made")
    _save_model(model, path)
    index.record_model(model, spec)
    return model.to(device)


def _finalized_stamp(index: LibraryIndex) -> str:
    """What the calibration and the saved search index were made from: while it stays the same
    (a run that found nothing new), finalising again would compute the same thing (2 s of a
    no-op run on 2 000 photos)."""
    c = index.catalog.counts()
    meta = index.catalog.get_meta
    return json.dumps(
        [
            meta("store_rows"),
            index.store_path.name,
            c[INDEXED],
            c["with_gps"],
            index.catalog.live_rows(),
            meta(SIDECAR_STAMP_KEY),
            meta(INDEX_CONFIG_KEY),
            meta(SEARCH_META_KEY),
            meta(MODEL_SHA_KEY),
        ]
    )


class _UpToDate(Exception):
    """No photo to extract and model.pt as recorded: the model is not even loaded."""


def _nothing_to_extract(index: LibraryIndex, model_spec, keep_index_model: bool) -> bool:
    """Whether this build has nothing for the network to do, decided without torch.

    True when no photo is pending and model.pt is the file whose weights made the descriptors:
    its size and mtime as recorded (else its sha256), with the weights' hash recorded too. The
    model-name check of ``_prepare_model`` is made here as well, so that asking for another model
    fails the same way whether or not there is work.
    """
    path = index.dir / MODEL_FILE
    raw = index.catalog.get_meta(MODEL_FILE_KEY)
    if not raw or index.catalog.get_meta(MODEL_SHA_KEY) is None or index.dim is None:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    recorded = index.model_name
    asked_other = model_spec is not None and recorded and str(model_spec) != recorded
    if asked_other and not keep_index_model:
        return False  # _prepare_model says why, as before
    if index.catalog.rows(PENDING):
        return False
    saved = json.loads(raw)
    if st.st_size != saved.get("size"):
        return False
    same_stamp = st.st_mtime_ns == saved.get("mtime_ns")
    return same_stamp or file_sha256(path) == saved.get("sha256")


def _photos_needed_first(
    index: LibraryIndex, library: Path, model_spec, init_cfg: InitConfig, count: int, local: bool
) -> list[Path]:
    """The (up to ``count``) photos this process's network will want first, known before torch
    loads: a new NetVLAD model's initialisation sample (as ``_prepare_model`` draws it), else the
    pending photos (none when ``local`` is false: Ray's workers decode those). Whether the model
    needs initialising is guessed from the spec here; a wrong guess only costs decoding on the
    core the import leaves idle."""
    from ..model.resolve import looks_like_file
    from ..model.zoo import is_downloadable

    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    fitted = (index.dir / MODEL_FILE).exists() or looks_like_file(spec) or is_downloadable(spec)
    if not fitted and ModelConfig.from_name(spec).pooling == "netvlad":
        rels = [row.path for row in index.catalog.rows()]
        rels = [rels[i] for i in sample_positions(len(rels), init_cfg)[:count]]
    elif local:
        rels = [row.path for row in index.catalog.rows(PENDING, limit=count)]
    else:
        rels = []
    return [library / rel for rel in rels]


def _restart_all(index: LibraryIndex, warnings: list[str], why: str) -> None:
    """Drop every descriptor of the old model: all photos pending, store and search emptied."""
    n = index.catalog.restart_all({"store_rows": "0", SEARCH_META_KEY: ""})
    remove_saved(index.dir)
    index.invalidate()
    msg = f"{why}: extracting all {n} photos again with it, so that no answer mixes two models"
    log.warning(msg)
    warnings.append(msg)


def _save_model(model, path: Path) -> None:
    """save_checkpoint, with a full disk said as such (torch says "enforce fail at …")."""
    import errno
    import shutil

    from ..model.checkpoint import save_checkpoint

    try:
        save_checkpoint(model, path)
    except (OSError, RuntimeError) as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC
        if not full:
            try:
                full = shutil.disk_usage(path.parent).free < _state_bytes(model)
            except OSError:
                pass
        why = "no space left on device" if full else str(exc).strip().splitlines()[0]
        raise LibraryIndexError(
            f"cannot save the model in {path.parent}: {why}; free some space and run again"
            if full
            else f"cannot save the model in {path.parent}: {why}"
        ) from exc


def _state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _calibrate(index: LibraryIndex, max_refs: int = 2000, seed: int = 0) -> dict[str, float]:
    """Similarity of same-place and different-place reference pairs, for locate's confidence."""
    rows = index.reference_points()
    if len(rows) < 2:
        return {}
    rng = np.random.default_rng(seed)
    if len(rows) > max_refs:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), max_refs, replace=False))]
    vecs = index.store().read([r.row for r in rows])
    sims = vecs @ vecs.T
    lat = np.array([r.lat for r in rows])
    lon = np.array([r.lon for r in rows])
    dist = geo.haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    off_diag = ~np.eye(len(rows), dtype=bool)
    same = sims[off_diag & (dist <= NEGATIVE_RADIUS_M)]
    diff = sims[off_diag & (dist > NEGATIVE_RADIUS_M)]
    out: dict[str, float] = {}
    if len(diff):
        out["neg_median"] = float(np.median(diff))
        out["neg_p99"] = float(np.quantile(diff, 0.99))
        # A query from elsewhere is compared with many references; its best score is the top
        # of that many draws, so the per-row maximum is the honest "no match" level.
        masked = np.where(off_diag & (dist > NEGATIVE_RADIUS_M), sims, -np.inf).max(1)
        out["neg_best_median"] = float(np.median(masked[np.isfinite(masked)]))
    if len(same):
        out["pos_median"] = float(np.median(same))
        masked = np.where(off_diag & (dist <= NEGATIVE_RADIUS_M), sims, -np.inf).max(1)
        out["pos_best_median"] = float(np.median(masked[np.isfinite(masked)]))
    out["pairs_same"] = int(len(same) // 2)
    out["pairs_diff"] = int(len(diff) // 2)
    return out


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
        try:
            if _nothing_to_extract(index, model_spec, keep_index_model):
                raise _UpToDate
            if progress:  # importing torch and loading the model take seconds: say so
                progress("model", 0, 1)
            # The core the import leaves idle decodes the first photos meanwhile.
            first = _photos_needed_first(
                index, library, model_spec, init_cfg, decoder.ahead, distributed is None
            )
            decoder.prefetch(first)
            from ..model.engine import load_engine

            load_engine()  # torch and torchvision, the collector paused: 0.6-0.9 s less
            from ..model.features import resolve_device

            device = resolve_device(extract_cfg.device)
            model = _prepare_model(
                index,
                model_spec,
                backbone_weights,
                device,
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
            summary.model = index.model_name
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
        index.compact_store()
        if progress:
            progress("finalize", 0, 1)
        if index.dim is not None and _finalized_stamp(index) != index.catalog.get_meta(
            FINALIZED_KEY
        ):
            index.catalog.set_meta("calibration", json.dumps(_calibrate(index)))

            def report(done: int, total: int) -> None:
                if progress:
                    progress("finalize", done, total)

            index.refresh_saved_search(report)
            index.catalog.set_meta(FINALIZED_KEY, _finalized_stamp(index))
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


def _extract_pending(
    index, model, library, pending, extract_cfg, progress, cancel, kept=None, decoder=None
) -> int:
    """Extract the pending photos and store their descriptors, committing as it goes.

    Photos whose backbone maps the one-pass initialisation kept (``kept``) are only pooled.
    """
    if not pending:
        return 0
    store = index.store()
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

    def report(done, total):
        if progress:
            progress("extract", done, total)

    maps = kept.get("maps") if kept else None
    where = {rel: n for n, rel in enumerate(kept["paths"])} if maps is not None else {}
    keys = [where.get(r.path) for r in pending]
    items = _descriptors(model, paths, extract_cfg, report, cancel, maps, keys, decoder)
    try:
        for item in items:
            error = item.error
            if item.descriptor is not None and not np.isfinite(item.descriptor).all():
                # A NaN row would match nothing and poison exact search: never stored.
                error = NON_FINITE
            if item.descriptor is not None and not error:
                done_ok.append((item.index, item.descriptor))
            else:
                log.warning("skipped %s: %s", display_name(str(paths[item.index])), error)
                done_bad.append((item.index, error))
            if len(done_ok) + len(done_bad) >= COMMIT_EVERY:
                commit()
    finally:
        commit()  # keep everything finished before a cancel or an error
    return extracted


def _descriptors(model, paths, extract_cfg, report, cancel, maps=None, keys=(), decoder=None):
    """``Extracted`` for each of ``paths`` (index into ``paths``): pooled from the kept backbone
    map where ``keys[i]`` names one in ``maps``, else through the whole network."""
    from ..model.features import Extracted, extract
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
            yield Extracted(i, pool_feature_map(model, maps.get(key)))
        report(done, len(paths))
    if rest:

        def report_rest(done, total):
            report(len(pooled) + done, len(paths))

        sub = [paths[i] for i in rest]
        items = extract(
            model, sub, extract_cfg, progress=report_rest, cancel=cancel, decoder=decoder
        )
        for item in items:
            yield Extracted(rest[item.index], item.descriptor, item.error)


__all__ = ["FAILED", "BuildSummary", "build_index"]
