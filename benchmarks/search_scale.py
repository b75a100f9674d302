"""Search at scale: real corridor + lund queries against their references hidden among distractors.

    python benchmarks/search_scale.py                       # 10 k and 100 k distractors
    python benchmarks/search_scale.py --sizes 1000000       # 1 M: writes a 24 GB store
    python benchmarks/search_scale.py --kinds flat ivfpq    # skip HNSW

The distractors have the real dimension (6144 for the default model) and are drawn to match the
real references' statistics: per data set, a Gaussian fitted by PCA to its references, plus an
isotropic part whose size is the leave-one-out variance that the PCA does not capture (what a new
photo has that the sample had not), then L2-normalised like a real descriptor. Half are drawn
from corridor's fit, half from lund's. They are generated in chunks from seeds (so 10 k is a
subset of 100 k, and 1 M never sits in RAM), written to a real descriptor store + catalogue, and
searched exactly by streaming the same chunks.

Each index type is built by the core's own code (``searchindex.open_search``), trained on a sample
of the store as the app does, and timed. Speeds are also given as a ratio to exact flat search
over the same set in the same run (at 1 M, where flat does not fit in RAM here, exact search
streamed from the chunks). R@1 of the real queries is compared with exact search over the same set.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine
from _real import CACHE, RealSet, load_real

CHUNK = 10_000
SEED = 1234


# -- distractors --------------------------------------------------------------------------------
@dataclasses.dataclass
class Fit:
    mean: np.ndarray  # (D,)
    comps: np.ndarray  # (k, D) orthonormal
    std: np.ndarray  # (k,)
    iso: float  # per-dimension std of the isotropic part


def fit_gaussian(x: np.ndarray) -> Fit:
    """PCA Gaussian of ``x`` plus the leave-one-out variance that falls outside its span.

    The leave-one-out residual of each reference (its part outside the span of the others,
    centred) is computed from the n x n Gram matrix alone.
    """
    x = x.astype(np.float64)
    n, d = x.shape
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    std = s / np.sqrt(n - 1)
    gram = x @ x.T
    m = n - 1
    centre = np.eye(m) - 1.0 / m
    outside = []
    for i in range(n):
        o = np.delete(np.arange(n), i)
        k_oo, k_oi = gram[np.ix_(o, o)], gram[o, i]
        a_at = centre @ k_oo @ centre  # A A^T, A = the others, centred
        a_r = centre @ (k_oi - k_oo.sum(1) / m)  # A (x_i - mean of the others)
        r_r = gram[i, i] - 2 * k_oi.sum() / m + k_oo.sum() / m**2
        inside = a_r @ np.linalg.pinv(a_at, rcond=1e-10, hermitian=True) @ a_r
        outside.append(max(r_r - inside, 0.0))
    out_var = float(np.mean(outside))
    total = float((std**2).sum())
    # Keep the total variance: the part outside the span comes out of the PCA part.
    shrink = np.sqrt(max(1.0 - out_var / max(total, 1e-12), 0.0))
    return Fit(mean, vt.astype(np.float32), (std * shrink).astype(np.float32), np.sqrt(out_var / d))


def distractor_chunk(fits: list[Fit], c: int, n: int) -> np.ndarray:
    """Chunk ``c`` (``n`` rows) of the distractors: the same for every size that includes it."""
    rng = np.random.default_rng([SEED, c])
    out = []
    for j, f in enumerate(fits):
        m = n // len(fits) + (1 if j < n % len(fits) else 0)
        z = rng.standard_normal((m, len(f.std)), dtype=np.float32) * f.std
        y = f.mean.astype(np.float32) + z @ f.comps
        y += f.iso * rng.standard_normal(y.shape, dtype=np.float32)
        out.append(y)
    y = np.concatenate(out)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return y


def chunks_of(size: int):
    for c, start in enumerate(range(0, size, CHUNK)):
        yield c, min(CHUNK, size - start)


# -- helpers ------------------------------------------------------------------------------------
def per_ref_bytes(index) -> float:
    """Bytes each reference adds to an approximate index (codes, ids, links), not the fixed part."""
    import faiss

    from netvlad_gui.core.library.searchindex import _unwrap

    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexIVF):
        return inner.code_size + 8  # code + id in its inverted list
    if isinstance(inner, faiss.IndexHNSW):
        links = inner.hnsw.neighbors.size() / max(inner.ntotal, 1) * 4
        return faiss.downcast_index(inner.storage).code_size + links + 8 + 8  # + level, id map
    return float("nan")


def recall(real: RealSet, ids: np.ndarray) -> dict[str, float]:
    """R@1 from database ids (1-based catalogue ids: real references first)."""
    top1 = np.where((ids >= 1) & (ids <= len(real.refs)), ids - 1, -1)
    return {k: round(v, 4) for k, v in real.recall_at_1(top1).items()}


# -- one size ------------------------------------------------------------------------------------
def prepare(real: RealSet, fits: list[Fit], size: int, work: Path) -> dict:
    """Write store + catalogue of real refs + ``size`` distractors; exact top-1 by streaming."""
    from netvlad_gui.core.library.catalog import Catalog
    from netvlad_gui.core.library.store import DescriptorStore

    folder = work / f"n{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    catalog = Catalog(folder / "catalog.sqlite")
    store = DescriptorStore(folder / "descriptors.f32", real.refs.shape[1], 0)
    q = real.queries
    t0 = time.perf_counter()
    best = q @ real.refs.T
    top_s, top_i = best.max(1), best.argmax(1) + 1  # ids are 1-based
    store.append(real.refs)
    gen_s = search_s = 0.0
    offset = len(real.refs)
    neg_sims = []
    for c, n in chunks_of(size):
        t = time.perf_counter()
        y = distractor_chunk(fits, c, n)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        s = q @ y.T
        arg = s.argmax(1)
        better = s[np.arange(len(q)), arg] > top_s
        top_s = np.where(better, s[np.arange(len(q)), arg], top_s)
        top_i = np.where(better, arg + offset + 1, top_i)
        search_s += time.perf_counter() - t
        if c == 0:  # first half drawn from corridor's fit, second from lund's
            half = np.arange(n) >= n // len(fits)
            for qi, k in enumerate(real.dataset_of_query):
                neg_sims.append(np.median(s[qi, half == bool(k)]))
        store.append(y)
        offset += n
    names = [(f"real/{n}", 0, 0.0, None, None, None, "", "") for n in real.ref_names]
    names += [(f"d/{i:08d}", 0, 0.0, None, None, None, "", "") for i in range(size)]
    catalog.upsert_pending(names)
    total = len(names)
    catalog.mark_done([(i + 1, i) for i in range(total)], [], {"store_rows": str(total)})
    catalog.set_meta("dim", str(real.refs.shape[1]))
    # How hard the distractors are: a query's median similarity to the distractors drawn from its
    # data set's fit vs to the real references of its data set that are not its matches.
    real_neg = []
    for qi, pos in enumerate(real.positives):
        same = real.dataset_of_ref == real.dataset_of_query[qi]
        neg = [j for j in np.flatnonzero(same) if j not in pos]
        real_neg.append(np.median(q[qi] @ real.refs[neg].T))
    return {
        "folder": folder,
        "catalog": catalog,
        "store": store,
        "exact_ids": top_i,
        "prepare_s": time.perf_counter() - t0,
        "generate_s": gen_s,
        "exact_stream_s": search_s + 0.0,
        "median_sim_query_vs_distractors": float(np.median(neg_sims)),
        "median_sim_query_vs_real_negatives": float(np.median(real_neg)),
    }


def time_queries(si, store, q: np.ndarray, k: int = 5) -> tuple[np.ndarray, list[float]]:
    ids, lat = [], []
    for i in range(min(5, len(q))):  # warm-up: page cache, faiss buffers
        si.search(store, q[i : i + 1], k)
    for i in range(len(q)):
        t = time.perf_counter()
        _, got = si.search(store, q[i : i + 1], k)
        lat.append(time.perf_counter() - t)
        ids.append(got[0, 0])
    return np.array(ids), lat


def bench_size(real, fits, size, kinds, work, args) -> list[dict]:
    import faiss

    from netvlad_gui.core.config import IndexConfig
    from netvlad_gui.core.library.searchindex import (
        PAIRS_FILE,
        SEARCH_FILE,
        SearchIndex,
        open_search,
    )

    prep = prepare(real, fits, size, work)
    n = size + len(real.refs)
    exact_r1 = recall(real, prep["exact_ids"])
    d = real.refs.shape[1]
    stream_ms = 1000 * prep["exact_stream_s"] / len(real.queries)
    print(
        f"[{size}] prepared in {prep['prepare_s']:.0f} s; exact R@1 {exact_r1}; "
        f"median sim to distractors {prep['median_sim_query_vs_distractors']:.3f} vs real "
        f"negatives {prep['median_sim_query_vs_real_negatives']:.3f}",
        flush=True,
    )
    rows: list[dict] = []
    base_ms = None
    store, catalog, folder = prep["store"], prep["catalog"], prep["folder"]
    for kind in kinds:
        if kind == "flat" and n * d * 4 > args.flat_max_bytes:
            print(f"[{size}] flat skipped: {n * d * 4 / 1e9:.1f} GB would not fit", flush=True)
            continue
        cfg = IndexConfig(kind=kind, **args.index_overrides)
        gc.collect()
        t0 = time.perf_counter()
        si = open_search(folder, catalog, store, d, cfg)
        build_s = time.perf_counter() - t0
        mem = per_ref = si.index.ntotal * (d * 4 + 8) / n if kind == "flat" else None
        disk = 0
        load_s = build_s
        if kind != "flat":
            disk = sum((folder / f).stat().st_size for f in (SEARCH_FILE, PAIRS_FILE))
            # Loaded from disk, the way a later locate opens it.
            del si
            gc.collect()
            t1 = time.perf_counter()
            si = open_search(folder, catalog, store, d, cfg)
            load_s = time.perf_counter() - t1
            mem = len(faiss.serialize_index(si.index)) + si.ids.nbytes + si.rows.nbytes
            per_ref = per_ref_bytes(si.index) + 16  # + the id -> store row map
        mem = mem if kind != "flat" else mem * n
        variants = [("", cfg)]
        if kind == "ivfpq":
            variants += [
                (f" rerank={r}", dataclasses.replace(cfg, rerank=r)) for r in args.rerank_variants
            ]
            variants += [
                (f" nprobe={p}", dataclasses.replace(cfg, nprobe=p)) for p in args.nprobe_variants
            ]
        for label, vcfg in variants:
            sv = SearchIndex(si.kind, si.index, si.ids, si.rows, vcfg)
            ids, lat = time_queries(sv, store, real.queries)
            t = time.perf_counter()
            sv.search(store, real.queries, 5)
            batch_ms = 1000 * (time.perf_counter() - t) / len(real.queries)
            med = 1000 * statistics.median(lat)
            if kind == "flat" and not label:
                base_ms = med
            r1 = recall(real, ids)
            row = {
                "distractors": size,
                "kind": kind + label,
                "query_ms_median": round(med, 2),
                "query_ms_p90": round(1000 * float(np.quantile(lat, 0.9)), 2),
                "batch_ms_per_query": round(batch_ms, 2),
                "speedup_vs_exact": round((base_ms or stream_ms) / med, 1),
                "exact_baseline": "flat in RAM" if base_ms else "exact streamed over chunks",
                "bytes_per_ref_memory": round(mem / n, 1),
                "bytes_per_ref_codes": round(per_ref, 1),
                "fixed_bytes": int(mem - per_ref * n),
                "bytes_per_ref_disk": round(disk / n, 1),
                "store_bytes_per_ref": d * 4,
                "build_s": round(build_s, 1),
                "load_s": round(load_s, 2),
                "r1": r1,
                "r1_exact": exact_r1,
                "same_top1_as_exact": round(float(np.mean(ids == prep["exact_ids"])), 4),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        if kind in ("flat", "ivfpq") and args.threads_check:
            # SearchIndex runs single queries on one faiss thread; compare with all threads.
            from netvlad_gui.core.library import searchindex

            _, lat_one = time_queries(si, store, real.queries)
            saved, searchindex.FEW_QUERIES = searchindex.FEW_QUERIES, 0
            try:
                _, lat_all = time_queries(si, store, real.queries)
            finally:
                searchindex.FEW_QUERIES = saved
            row = {
                "distractors": size,
                "kind": f"{kind} threads",
                "query_ms_1_thread": round(1000 * statistics.median(lat_one), 2),
                f"query_ms_{faiss.omp_get_max_threads()}_threads": round(
                    1000 * statistics.median(lat_all), 2
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        del si
        gc.collect()
    catalog.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--work", type=Path, default=CACHE / "scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated stores")
    ap.add_argument("--flat-max-gb", type=float, default=6.0, help="skip flat above this size")
    ap.add_argument("--hnsw-max", type=int, default=10_000, help="skip HNSW above this size")
    ap.add_argument("--rerank-variants", type=int, nargs="*", default=[0, 32, 512])
    ap.add_argument("--nprobe-variants", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--threads-check", action="store_true", help="ivfpq latency on 1 thread too")
    ap.add_argument("--set", nargs="*", default=[], help="IndexConfig overrides, e.g. pq_m=512")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    args.flat_max_bytes = args.flat_max_gb * 1e9
    args.index_overrides = {k: int(v) for k, v in (s.split("=") for s in args.set)}

    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    real = load_real(args.model)
    t0 = time.perf_counter()
    fits = [fit_gaussian(real.refs[real.dataset_of_ref == k]) for k in (0, 1)]
    print(f"fitted distractor model in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for size in args.sizes:
        kinds = [k for k in args.kinds if not (k == "hnsw" and size > args.hnsw_max)]
        rows += bench_size(real, fits, size, kinds, args.work, args)
    print()
    head = (
        f"{'N':>8} {'kind':18} {'ms/q':>7} {'x exact':>7} {'B/ref mem':>9} {'B/ref disk':>10} "
        f"{'build s':>8} {'R@1':>6} {'exact':>6} {'=top1':>6}"
    )
    print(head)
    for r in rows:
        if "query_ms_median" not in r:
            continue
        print(
            f"{r['distractors']:>8} {r['kind']:18} {r['query_ms_median']:>7} "
            f"{r['speedup_vs_exact']:>7} {r['bytes_per_ref_memory']:>9} "
            f"{r['bytes_per_ref_disk']:>10} {r['build_s']:>8} {r['r1']['all']:>6} "
            f"{r['r1_exact']['all']:>6} {r['same_top1_as_exact']:>6}"
        )
    result = {"benchmark": "search_scale", "machine": info, "model": real.model, "rows": rows}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
