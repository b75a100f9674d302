"""Building and updating a library index: scan, initialise the model, extract, finalise.

The steps commit as they go (catalogue rows, descriptor rows, the initialised model), so that a
second run only does what is missing: new or changed photos, or the rest of a killed build.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import geo
from .catalog import FAILED, PENDING
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (
    DEFAULT_MODEL,
    NEGATIVE_RADIUS_M,
    DistributedConfig,
    ExtractConfig,
    IndexConfig,
    InitConfig,
)
from .errors import LibraryIndexError
from .features import Cancelled, extract, resolve_device
from .images import list_images
from .index import MODEL_FILE, LibraryIndex, StageProgress
from .initialise import initialise_from_images
from .resolve import resolve_model

log = logging.getLogger(__name__)

COMMIT_EVERY = 32  # images per catalogue transaction: bounds the work a kill can lose


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

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["no_gps"] = [{"path": p, "reason": r} for p, r in self.no_gps]
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        return d


def _scan(index: LibraryIndex, library: Path, progress: StageProgress | None) -> tuple[int, int]:
    """Bring the catalogue in line with the folder: returns (files found, rows removed)."""
    files = list_images(library, exclude=[index.dir])
    sidecar = geo.load_sidecar_csv(library)
    known = {r.path: r for r in index.catalog.rows()}
    seen: set[str] = set()
    changed = []
    for n, path in enumerate(files, 1):
        rel = path.relative_to(library).as_posix()
        seen.add(rel)
        try:
            st = path.stat()
        except OSError as exc:
            log.warning("cannot stat %s: %s", path, exc)
            continue
        row = known.get(rel)
        if row is not None and row.size == st.st_size and abs(row.mtime - st.st_mtime) < 1e-3:
            continue
        gps = geo.read_gps(path, root=library, sidecar=sidecar)
        pt = gps.point
        changed.append(
            (
                rel,
                st.st_size,
                st.st_mtime,
                pt.lat if pt else None,
                pt.lon if pt else None,
                pt.alt if pt else None,
                gps.source,
                gps.reason,
            )
        )
        if progress and n % 50 == 0:
            progress("scan", n, len(files))
    removed = [r.id for p, r in known.items() if p not in seen]
    if changed:
        index.catalog.upsert_pending(changed)
    if removed:
        index.catalog.delete(removed)
    if progress:
        progress("scan", len(files), len(files))
    return len(files), len(removed)


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
):
    """The index's own model if it has one; else a new one, initialised from this library."""
    path = index.dir / MODEL_FILE
    if path.exists():
        model = load_checkpoint(path)
        recorded = index.model_name
        if keep_index_model and model_spec is not None and str(model_spec) != recorded:
            log.info("%s keeps its model %s (asked for %s)", index.dir, recorded, model_spec)
        elif model_spec is not None and str(model_spec) != recorded:
            raise LibraryIndexError(
                f"this index was built with model {recorded!r}, not {str(model_spec)!r}; "
                "use another --index folder (or delete this one) to index with a new model"
            )
        return model.to(device)
    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    model = resolve_model(spec, backbone_weights).to(device)
    if not model.is_initialised:
        paths = [library / row.path for row in index.catalog.rows()]
        if not paths:
            raise LibraryIndexError(f"no images in {library} to initialise the NetVLAD layer from")
        initialise_from_images(
            model,
            paths,
            init_cfg,
            extract_cfg,
            progress=(lambda n, total: progress("init", n, total)) if progress else None,
            cancel=cancel,
            meta={"library": str(library)},
        )
    save_checkpoint(model.cpu(), path)
    index.catalog.set_meta("model", spec)
    return model.to(device)


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
    (``core/distributed.py``) instead of in this process; the index comes out the same.
    An index that has a model keeps it: asking for another one is an error, unless
    ``keep_index_model`` (the GUI's "update"), which builds on with the index's own model.
    """
    from .library import no_gps_photos, resolve_index_dir

    t0 = time.perf_counter()
    extract_pending = _extract_pending
    if distributed is not None:
        from .distributed import extract_pending_ray, require_ray

        require_ray()  # before any work: say how to install it

        def extract_pending(*args):
            return extract_pending_ray(*args, distributed)

    extract_cfg = extract_cfg or ExtractConfig()
    init_cfg = init_cfg or InitConfig()
    library = Path(library).expanduser().resolve()
    if not library.is_dir():
        raise LibraryIndexError(f"library folder not found: {library}")
    index_dir = resolve_index_dir(library, index_dir)
    index = LibraryIndex(index_dir, create=True)
    lock = _lock(index.dir)
    try:
        recorded = index.library
        if recorded is not None and recorded != library:
            raise LibraryIndexError(
                f"{index_dir} indexes {recorded}, not {library}; choose another --index folder"
            )
        index.catalog.set_meta("library", str(library))
        if index_cfg is not None:
            index.record_config(index_cfg)
        device = resolve_device(extract_cfg.device)
        summary = BuildSummary(str(library), str(index_dir), "")
        summary.total, summary.removed = _scan(index, library, progress)
        pending = index.catalog.rows(PENDING)
        try:
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
            )
            summary.model = index.model_name
            if index.dim is None:
                index.catalog.set_meta("dim", str(model.dim))
            elif index.dim != model.dim:
                raise LibraryIndexError(
                    f"model gives {model.dim}-D descriptors, index holds {index.dim}-D"
                )
            summary.extracted = extract_pending(
                index, model, library, pending, extract_cfg, progress, cancel
            )
        except Cancelled:
            summary.cancelled = True
        index.invalidate()
        if progress:
            progress("finalize", 0, 1)
        if index.dim is not None:
            index.catalog.set_meta("calibration", json.dumps(_calibrate(index)))

            def report(done: int, total: int) -> None:
                if progress:
                    progress("finalize", done, total)

            index.refresh_saved_search(report)
        stats = index.stats()
        summary.model = summary.model or index.model_name
        summary.indexed = stats.indexed
        summary.with_gps = stats.with_gps
        summary.failed = stats.failures
        summary.no_gps = no_gps_photos(index)
        summary.bytes_per_image = stats.bytes_per_image
        summary.elapsed_s = time.perf_counter() - t0
        if progress:
            progress("finalize", 1, 1)
        return summary
    finally:
        index.close()
        lock.close()


def _lock(index_dir: Path):
    """One build per index at a time: a second one (the GUI and the CLI, say) is refused."""
    f = open(index_dir / "build.lock", "w")  # noqa: SIM115 - held for the whole build
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no advisory locks; SQLite still serialises writes
        pass
    except OSError:
        f.close()
        raise LibraryIndexError(
            f"another build is already updating {index_dir}; wait for it"
        ) from None
    return f


def _extract_pending(index, model, library, pending, extract_cfg, progress, cancel) -> int:
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

    try:
        for item in extract(model, paths, extract_cfg, progress=report, cancel=cancel):
            if item.descriptor is not None:
                done_ok.append((item.index, item.descriptor))
            else:
                log.warning("skipped %s: %s", paths[item.index], item.error)
                done_bad.append((item.index, item.error))
            if len(done_ok) + len(done_bad) >= COMMIT_EVERY:
                commit()
    finally:
        commit()  # keep everything finished before a cancel or an error
    return extracted


__all__ = ["FAILED", "BuildSummary", "build_index"]
