"""Descriptor extraction on Ray Data, for libraries that outgrow one machine.

Ray Data's ``map_batches`` runs a pool of actors that each hold the model (on a CPU or a GPU),
decode photos and describe them, and its parquet writer puts the descriptors on disk as shards
(one folder per wave of photos). This process then merges the shards into the index's descriptor
store and catalogue, committing them the way the single-process build does. Everything else (scan,
model initialisation, calibration, the faiss index) is the builder's own code, so both paths give
the same index. Ray does all the scheduling; nothing here queues or pools work by itself.

Ray is an optional extra (``pip install ".[distributed]"``); this module is only imported when a
build asks for it, and says how to install Ray when it is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import DistributedConfig, ExtractConfig
from ..errors import NetvladError
from ..model.features import Cancelled
from .store import NOT_UNIT, unit_rows

log = logging.getLogger(__name__)

INSTALL_HINT = (
    'indexing with --ray needs Ray: pip install ".[distributed]" '
    '(in a checkout of netvlad-gui), or pip install "ray[data]>=2.9"'
)
SHARDS_DIR = "shards"


class RayUnavailableError(NetvladError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def require_ray():
    """The ``ray`` module with Ray Data, or a RayUnavailableError that says how to install it."""
    try:
        import ray
        import ray.data  # Ray Data is a separate extra of Ray
    except ImportError:
        raise RayUnavailableError(INSTALL_HINT) from None
    return ray


class _Describer:
    """A Ray actor: holds the model, turns a batch of (id, path) rows into descriptors."""

    def __init__(self, checkpoint: bytes, cfg: dict, device: str, threads: int):
        import torch

        from ..model.checkpoint import load_checkpoint
        from ..model.features import inference_model, resolve_device
        from ..model.runtime import tune_process

        tune_process()
        torch.set_num_threads(max(1, threads))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(checkpoint)
            model = load_checkpoint(path)
        # Decoding happens in this actor's thread: Ray's actors are the parallelism.
        self.cfg = dataclasses.replace(ExtractConfig(**cfg), num_workers=0, device=device)
        # Folded and laid out once here, not by extract() for every batch Ray hands over.
        self.model = inference_model(model.to(resolve_device(device)), self.cfg)
        self.dim = model.dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..model.features import extract

        ids = np.asarray(batch["id"], dtype=np.int64)
        paths = [str(p) for p in batch["path"]]
        desc = np.zeros((len(ids), self.dim), np.float32)
        errors = [""] * len(ids)
        ok = np.zeros(len(ids), bool)
        for item in extract(self.model, paths, self.cfg):
            if item.descriptor is not None:
                desc[item.index] = item.descriptor
                ok[item.index] = True
            else:
                errors[item.index] = item.error or "cannot read image"
        return {"id": ids, "ok": ok, "desc": desc, "error": np.array(errors, dtype=object)}


def _init(ray, cfg: DistributedConfig) -> bool:
    """Connect to the cluster, or start Ray here; True if this call started it."""
    if ray.is_initialized():
        return False
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False}
    try:
        if cfg.address:
            import netvlad_gui

            # The cluster's workers import this package from what the driver sends them.
            pkg = str(Path(netvlad_gui.__file__).parent)
            ray.init(address=cfg.address, runtime_env={"py_modules": [pkg]}, **kwargs)
        else:
            ray.init(num_cpus=cfg.num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = cfg.address or "this machine"
        raise RayUnavailableError(f"cannot start or reach Ray on {where}: {exc}") from None
    return True


def _plan(ray, extract_cfg: ExtractConfig, cfg: DistributedConfig) -> dict:
    """Actors and resources: GPU actors when asked for (or "auto" and the cluster has GPUs)."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    use_gpu = extract_cfg.device == "cuda" or (extract_cfg.device == "auto" and gpus > 0)
    if use_gpu:
        if gpus == 0:
            raise RayUnavailableError("CUDA was asked for, but the Ray cluster has no GPU")
        actors = cfg.actors or gpus
        return {"actors": actors, "num_cpus": 1, "num_gpus": 1, "device": "cuda", "threads": 1}
    per = max(1, cfg.cpus_per_actor)
    actors = cfg.actors or max(1, int(res.get("CPU", 1)) // per)
    return {"actors": actors, "num_cpus": per, "num_gpus": 0, "device": "cpu", "threads": per}


def _merge(index, shard_dir: Path) -> int:
    """Append one wave's shards to the store and catalogue; returns the photos indexed."""
    import pyarrow.parquet as pq

    store = index.store()
    indexed = 0
    for f in sorted(shard_dir.rglob("*.parquet")):
        table = pq.read_table(f)
        ids = table.column("id").to_numpy()
        ok = table.column("ok").to_numpy(zero_copy_only=False)
        errors = table.column("error").to_pylist()
        desc = _tensor_column(table.column("desc"), store.dim)
        empty = ok & ~unit_rows(desc)  # NaN or length 0: never stored (see builder.py)
        errors = [NOT_UNIT if e else err for e, err in zip(empty, errors, strict=True)]
        ok = ok & ~empty
        good = np.flatnonzero(ok)
        done: list[tuple[int, int]] = []
        if len(good):
            first = store.append(desc[good])
            done = [(int(ids[j]), first + n) for n, j in enumerate(good)]
        bad = [(int(ids[j]), errors[j] or "cannot read image") for j in np.flatnonzero(~ok)]
        for j in np.flatnonzero(~ok):
            log.warning("skipped id %d: %s", ids[j], errors[j])
        index.catalog.mark_done(done, bad, {"store_rows": str(store.rows)})
        indexed += len(done)
    return indexed


def _tensor_column(col, dim: int) -> np.ndarray:
    """Ray Data writes (B, D) arrays as a tensor extension column; back to a float32 array."""
    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if hasattr(arr, "to_numpy_ndarray"):  # pyarrow's fixed-shape tensor type
        return np.asarray(arr.to_numpy_ndarray(), np.float32).reshape(-1, dim)
    try:
        out = arr.to_numpy()
    except (TypeError, NotImplementedError):
        out = arr.to_numpy(zero_copy_only=False)
    if out.dtype == object:
        out = np.stack([np.asarray(v, np.float32).ravel() for v in out])
    return np.asarray(out, np.float32).reshape(-1, dim)


def extract_pending_ray(
    index, model, library: Path, pending, extract_cfg, progress, cancel, cfg: DistributedConfig
) -> int:
    """The builder's extraction step, on Ray: returns the photos indexed by this run."""
    from .index import MODEL_FILE

    if not pending:
        return 0
    ray = require_ray()
    started = _init(ray, cfg)
    root = index.dir / SHARDS_DIR
    shutil.rmtree(root, ignore_errors=True)  # a killed run's shards: their photos are pending
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the builder reports progress itself
        plan = _plan(ray, extract_cfg, cfg)
        log.info("Ray extraction: %s", plan)
        blob = (index.dir / MODEL_FILE).read_bytes()
        cfg_dict = dataclasses.asdict(extract_cfg)
        done = indexed = 0
        if progress:
            progress("extract", 0, len(pending))
        for start in range(0, len(pending), max(1, cfg.wave_size)):
            if cancel is not None and cancel():
                raise Cancelled()
            wave = pending[start : start + cfg.wave_size]
            items = [{"id": r.id, "path": str(library / r.path)} for r in wave]
            blocks = max(1, min(len(items) // max(extract_cfg.batch_size, 1), plan["actors"] * 4))
            ds = ray.data.from_items(items, override_num_blocks=blocks)
            ds = ds.map_batches(
                _Describer,
                fn_constructor_args=(blob, cfg_dict, plan["device"], plan["threads"]),
                batch_size=max(1, extract_cfg.batch_size),
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
                num_cpus=plan["num_cpus"],
                num_gpus=plan["num_gpus"],
            )
            out = root / f"wave-{start:010d}"
            ds.write_parquet(str(out), min_rows_per_file=cfg.rows_per_shard)
            indexed += _merge(index, out)
            shutil.rmtree(out, ignore_errors=True)
            done += len(wave)
            if progress:
                progress("extract", done, len(pending))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if started:
            ray.shutdown()
    return indexed
