"""What checking stored descriptors for damage costs (issue 23, bit rot in descriptors.f32).

    python benchmarks/store_check.py                 # 10 000 references of 6144-D
    python benchmarks/store_check.py --sizes 50000   # flat_max: the largest exact library
    python benchmarks/store_check.py --flips IDX/descriptors.f32   # what the check lets through

A stored descriptor is sound when it is finite and of unit length (``store.unit_rows``). Three
places check it, each timed against the same work without the check, alternately in one run:

- an exact (flat) search index checks every row once, when a locate session loads it;
- an approximate one (IVF-PQ, re-ranking 128 candidates) checks the rows of the answer it
  gives, per query (queries alternate one by one with and without the check);
- a build checks the whole store before it scans (``repair.requeue_damaged_rows``), against a
  plain read of the same rows.

The references are random unit vectors (the check's cost does not depend on their content),
written to a real descriptor store and catalogue.

``--flips STORE`` asks what the check lets through: in real stored descriptors (an index's
descriptors.f32), 10 random bits flipped in one row at a time, as the hostile tester did; for each
tolerance, the share of damaged rows still taken as sound and how far those move any cosine with
the store's other rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

DIM = 6144


def make_index(folder: Path, n: int):
    """A catalogue of ``n`` indexed photos and their unit rows in a descriptor store."""
    from netvlad_gui.core.library.index import LibraryIndex

    index = LibraryIndex(folder, create=True)
    index.catalog.set_meta("dim", str(DIM))
    index.catalog.upsert_pending(
        [(f"p{i:07d}.jpg", 1, 0.0, 55.0, 13.0, None, "csv", "") for i in range(n)]
    )
    store = index.store()
    rng = np.random.default_rng(0)
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        v = rng.standard_normal((m, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.append(v)
    pairs = [(i + 1, i) for i in range(n)]
    index.catalog.mark_done(pairs, [], {"store_rows": str(n)})
    return index


def alternate(fn_with, fn_without, rounds: int) -> tuple[float, float]:
    """Median seconds of each, run alternately (the machine is shared and noisy)."""
    a, b = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        fn_with()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_without()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def unchecked(module):
    """A context that makes ``module.unit_rows`` pass every row without looking."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        real = module.unit_rows
        module.unit_rows = lambda v: np.ones(len(v), bool)
        try:
            yield
        finally:
            module.unit_rows = real

    return ctx


def run(n: int, rounds: int, queries: int) -> dict:
    from netvlad_gui.core.config import IndexConfig
    from netvlad_gui.core.library import repair, searchindex
    from netvlad_gui.core.library.searchindex import build_flat, catalogue_pairs, open_search

    out: dict = {"references": n, "dim": DIM}
    with tempfile.TemporaryDirectory() as tmp:
        index = make_index(Path(tmp), n)
        store = index.store()
        ids, rows = catalogue_pairs(index.catalog)
        off = unchecked(searchindex)

        def flat_without():
            with off():
                build_flat(store, ids, rows, DIM)

        w, wo = alternate(lambda: build_flat(store, ids, rows, DIM), flat_without, rounds)
        out["flat_load_s"] = {"checked": w, "unchecked": wo, "ratio": w / wo}

        cfg = IndexConfig(kind="ivfpq", train_size=min(n, 20_000), kmeans_iters=4)
        t0 = time.perf_counter()
        search = open_search(Path(tmp), index.catalog, store, DIM, cfg, save=False)
        out["ivfpq_build_s"] = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        q = store.read(rng.integers(0, n, queries))
        q += rng.standard_normal(q.shape, dtype=np.float32) * 0.01
        q /= np.linalg.norm(q, axis=1, keepdims=True)

        real = searchindex.unit_rows

        def passed(v):
            return np.ones(len(v), bool)

        a, b = [], []  # one query at a time, alternating which goes first
        for _ in range(rounds):
            for i in range(len(q)):
                pair = ((real, a), (passed, b)) if i % 2 else ((passed, b), (real, a))
                for fn, acc in pair:
                    searchindex.unit_rows = fn
                    t = time.perf_counter()
                    search.search(store, q[i : i + 1], 5)
                    acc.append(time.perf_counter() - t)
        searchindex.unit_rows = real
        w, wo = statistics.median(a) * queries, statistics.median(b) * queries
        shown = store.read(rng.integers(0, n, 5))  # the top 5 a query's answer shows
        t = time.perf_counter()
        for _ in range(1000):
            searchindex.unit_rows(shown)
        out["ivfpq_query_ms"] = {
            "checked": 1000 * w / queries,
            "unchecked": 1000 * wo / queries,
            "ratio": w / wo,
            "rerank": cfg.rerank,
            "check_alone_ms": time.perf_counter() - t,  # 1000 checks of 5 rows (s) = ms per check
        }

        def full_check():
            repair.requeue_damaged_rows(index, [])

        def plain_read():
            order = np.argsort(rows)
            for start in range(0, n, repair.CHUNK):
                store.read(rows[order[start : start + repair.CHUNK]])

        w, wo = alternate(full_check, plain_read, rounds)
        out["build_full_check_s"] = {"checked": w, "plain_read": wo, "ratio": w / wo}
        index.close()
    return out


def flip_study(path: Path, trials: int, flips: int = 10) -> dict:
    from netvlad_gui.core.library.store import UNIT_TOLERANCE

    n = path.stat().st_size // 4 // DIM
    d = np.fromfile(path, np.float32, count=n * DIM).reshape(n, DIM)
    rng = np.random.default_rng(0)
    dev, moved = np.empty(trials), np.empty(trials)
    for t in range(trials):
        r = int(rng.integers(n))
        bits = d[r].view(np.uint32).copy()
        pos = rng.choice(DIM * 32, flips, replace=False)
        np.bitwise_xor.at(bits, pos // 32, np.uint32(1) << (pos % 32).astype(np.uint32))
        v = bits.view(np.float32)
        with np.errstate(all="ignore"):
            norm = np.sqrt(np.dot(v.astype(np.float64), v.astype(np.float64)))
            change = np.abs(d @ v - d @ d[r])
        dev[t] = abs(norm - 1) if np.isfinite(norm) else np.inf
        moved[t] = change.max() if np.isfinite(change).all() else np.inf
    out = {"rows": n, "trials": trials, "bits_flipped": flips, "tolerances": {}}
    for tol in (1e-2, UNIT_TOLERANCE, 1e-4, 1e-5):
        passed = dev <= tol
        out["tolerances"][f"{tol:g}"] = {
            "taken_as_sound": float(passed.mean()),
            "max_cosine_change_of_those": float(moved[passed].max()) if passed.any() else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--flips", type=Path, metavar="STORE", help="a descriptors.f32 of 6144-D rows")
    ap.add_argument("--trials", type=int, default=20_000)
    args = ap.parse_args()
    if args.flips:
        print(json.dumps(flip_study(args.flips, args.trials), indent=1))
        return
    results = {
        "machine": machine(),
        "runs": [run(n, args.rounds, args.queries) for n in args.sizes],
    }
    for r in results["runs"]:
        f, q, b = r["flat_load_s"], r["ivfpq_query_ms"], r["build_full_check_s"]
        print(
            f"{r['references']:>7} refs | flat load {f['checked']:.3f} s vs {f['unchecked']:.3f} s "
            f"(x{f['ratio']:.2f}) | ivfpq query {q['checked']:.2f} ms vs {q['unchecked']:.2f} ms "
            f"(x{q['ratio']:.2f}; the check alone {q['check_alone_ms']:.3f} ms) | build check "
            f"{b['checked']:.3f} s vs read {b['plain_read']:.3f} s (x{b['ratio']:.2f})"
        )
    print(json.dumps(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
