"""Real descriptors for the benchmarks: corridor and lund references and queries, one model.

Both reference sets go into one library (file symlinks in a temp folder) and are indexed by the
real ``core`` pipeline, so the model's NetVLAD layer is initialised the way a user's would be.
The queries are then described by that same model. The result is cached per model and image
size, because extracting 246 photos on a shared 2-core machine takes minutes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
CACHE = Path(os.environ.get("NETVLAD_BENCH_CACHE", "/tmp/netvlad_bench"))
RECALL_M = 25.0


@dataclass
class RealSet:
    """References and queries of corridor + lund, with ground truth per query."""

    refs: np.ndarray  # (R, D) float32, L2-normalised
    ref_names: list[str]  # "corridor/0000000.jpg", "lund/01.jpg"
    queries: np.ndarray  # (Q, D)
    query_names: list[str]
    positives: list[set[int]]  # indices into refs that count as correct, per query
    model: str
    dataset_of_ref: np.ndarray  # 0 corridor, 1 lund
    dataset_of_query: np.ndarray

    def recall_at_1(self, top1: np.ndarray) -> dict[str, float]:
        """R@1 overall and per dataset; ``top1`` holds ref indices (or -1) per query."""
        hit = np.array([int(t) in p for t, p in zip(top1, self.positives, strict=True)])
        out = {"all": float(hit.mean())}
        for k, name in enumerate(("corridor", "lund")):
            m = self.dataset_of_query == k
            out[name] = float(hit[m].mean())
        return out


def _library(tmp: Path) -> tuple[Path, list[Path], list[Path]]:
    lib = tmp / "reallib"
    corridor, lund = SHARED / "data/corridor", SHARED / "data/lund_street"
    for sub, src in (("corridor", corridor / "ref"), ("lund", lund / "references")):
        (lib / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            link = lib / sub / f.name
            if f.suffix.lower() == ".jpg" and not link.exists():
                link.symlink_to(f)
    queries = sorted((corridor / "query").glob("*.jpg")) + sorted((lund / "queries").glob("*.jpg"))
    return lib, sorted(lib.rglob("*.jpg")), queries


def load_real(
    model: str | None = None, image_size: int = 640, backbone_weights: str | None = None
) -> RealSet:
    """The real descriptors (from the cache when present)."""
    from netvlad_gui.core.config import DEFAULT_MODEL, ExtractConfig
    from netvlad_gui.core.photos import geo

    model = model or DEFAULT_MODEL
    key = hashlib.sha1(f"{model}|{image_size}|{backbone_weights}".encode()).hexdigest()[:10]
    CACHE.mkdir(parents=True, exist_ok=True)
    npz = CACHE / f"real_{key}.npz"
    lib, ref_paths, query_paths = _library(CACHE)
    if not npz.exists():
        from netvlad_gui.core.library.builder import build_index
        from netvlad_gui.core.library.index import LibraryIndex
        from netvlad_gui.core.model.features import extract
        from netvlad_gui.core.query.locate import Locator

        cfg = ExtractConfig(image_size=image_size, device="cpu")
        idx_dir = CACHE / f"realidx_{key}"
        build_index(
            lib, idx_dir, model_spec=model, backbone_weights=backbone_weights, extract_cfg=cfg
        )
        index = LibraryIndex(idx_dir)
        rows = {r.path: r for r in index.catalog.rows("indexed")}
        names = [p.relative_to(lib).as_posix() for p in ref_paths]
        refs = index.store().read([rows[n].row for n in names])
        loc = Locator(index, extract_cfg=cfg)
        qd = np.zeros((len(query_paths), refs.shape[1]), np.float32)
        for item in extract(loc.model, query_paths, cfg):
            qd[item.index] = item.descriptor
        np.savez(npz, refs=refs, queries=qd, names=np.array(names))
        index.close()
    data = np.load(npz)
    names = [str(n) for n in data["names"]]
    qnames = [("corridor/" if "corridor" in str(p) else "lund/") + p.name for p in query_paths]
    pos_map = {}
    with open(SHARED / "data/corridor/gt.csv") as f:
        for row in csv.DictReader(f):
            q = "corridor/" + Path(row["query"]).name
            pos_map[q] = {"corridor/" + Path(r).name for r in row["positive_refs"].split(";") if r}
    ref_gps = {}
    for n, p in zip(names, ref_paths, strict=True):
        if n.startswith("lund/"):
            pt = geo.read_gps(p).point
            ref_gps[n] = (pt.lat, pt.lon)
    for q, p in zip(qnames, query_paths, strict=True):
        if q.startswith("lund/"):
            pt = geo.read_gps(p).point
            pos_map[q] = {
                n
                for n, (la, lo) in ref_gps.items()
                if geo.haversine_m(pt.lat, pt.lon, la, lo) <= RECALL_M
            }
    index_of = {n: i for i, n in enumerate(names)}
    positives = [{index_of[n] for n in pos_map[q]} for q in qnames]
    return RealSet(
        refs=data["refs"],
        ref_names=names,
        queries=data["queries"],
        query_names=qnames,
        positives=positives,
        model=model,
        dataset_of_ref=np.array([0 if n.startswith("corridor/") else 1 for n in names]),
        dataset_of_query=np.array([0 if n.startswith("corridor/") else 1 for n in qnames]),
    )


if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    real = load_real()
    sims = real.queries @ real.refs.T
    print(
        json.dumps(
            {
                "refs": len(real.refs),
                "queries": len(real.queries),
                "s": round(time.perf_counter() - t0, 1),
                "r1_exact": real.recall_at_1(sims.argmax(1)),
            }
        )
    )
