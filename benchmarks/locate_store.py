"""A cold, verified ``netvlad locate`` with the references' features on disk or not.

    python benchmarks/locate_store.py --code /tmp/pd/main --rounds 5

Whole processes (``python -m netvlad_gui.cli locate PHOTO --index IDX --json``), one warm-up
each, then rounds alternating: the other tree (``--code``, e.g. a ``git archive`` of main),
this tree after its store (``IDX/patches.sqlite``) was deleted (the first locate a library ever
sees: the 10 references' maps are computed and written), and this tree again on the filled
store (every later process). One index of the lund references, built by this tree (the builder
is the same in both), serves all three. Wall, CPU (user + system) and peak RSS of each process;
then the store's size per reference.

``--fresh`` (with ``--code``) times what a user meets after ``netvlad index``: each round, each
tree indexes the lund references into a new folder (its ``index`` command timed too), then the
first ``locate`` on that index is timed; a tree whose build fills the store (issue 24) answers
that first locate from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _common import machine
from cli_exit import LUND, timed

STORE = "patches.sqlite"


def empty_store(index: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{index / STORE}{suffix}").unlink(missing_ok=True)


def store_size(index: Path) -> dict:
    with sqlite3.connect(index / STORE) as db:
        rows, nbytes = db.execute("SELECT COUNT(*), SUM(nbytes) FROM features").fetchone()
    db.close()
    size = (index / STORE).stat().st_size
    return {
        "rows": rows,
        "feature_bytes_per_reference": round(nbytes / rows),
        "file_bytes": size,
        "file_bytes_per_reference": round(size / rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, help="another tree to pair with (no store)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--photo", type=Path, default=LUND / "queries" / "08.jpg")
    ap.add_argument("--index", type=Path, help="an index of the lund references (else built)")
    ap.add_argument(
        "--fresh", action="store_true", help="each round: index anew, then the first locate"
    )
    args = ap.parse_args()
    print(json.dumps({"machine": machine(), "load": os.getloadavg()}))
    if args.fresh:
        if not args.code:
            raise SystemExit("--fresh pairs this tree with --code")
        fresh(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(cwd / "cache"))
        index = args.index
        if index is None:
            index = cwd / "lund-index"
            timed(["index", str(LUND / "references"), "--index", str(index), "-q"], REPO, cwd)
        argv = ["locate", str(args.photo), "--index", str(index), "--json"]
        runs: dict[str, list[tuple]] = {"this, store emptied": [], "this, store filled": []}
        if args.code:
            runs = {"other tree": [], **runs}
            timed(argv, args.code, cwd)  # warm-up (the graph's cache, the page cache)
        empty_store(index)
        timed(argv, REPO, cwd)
        for _ in range(args.rounds):
            if args.code:
                runs["other tree"].append(timed(argv, args.code, cwd))
            empty_store(index)
            runs["this, store emptied"].append(timed(argv, REPO, cwd))
            runs["this, store filled"].append(timed(argv, REPO, cwd))
        for name, rows in runs.items():
            print(
                json.dumps(
                    {
                        "run": name,
                        "code": str(args.code if name == "other tree" else REPO),
                        "wall_s": [round(r[0], 2) for r in rows],
                        "median_wall_s": round(statistics.median(r[0] for r in rows), 2),
                        "median_cpu_s": round(statistics.median(r[2] for r in rows), 2),
                        "peak_rss_mb": round(max(r[3] for r in rows)),
                    }
                )
            )
        print(json.dumps({"store": store_size(index), "load": os.getloadavg()}))


def fresh(args) -> None:
    """Per round and tree: a new index of the lund references, then its first locate."""
    trees = {"other tree": args.code, "this tree": REPO}
    runs: dict[str, dict[str, list[tuple]]] = {t: {"index": [], "locate": []} for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(cwd / "cache"))
        for n in range(args.rounds + 1):  # round 0 warms up (graph export, page cache)
            for name, code in trees.items():
                index = cwd / f"idx-{n}-{name.split()[0]}"
                built = timed(
                    ["index", str(LUND / "references"), "--index", str(index), "-q"], code, cwd
                )
                first = timed(
                    ["locate", str(args.photo), "--index", str(index), "--json"], code, cwd
                )
                if n:
                    runs[name]["index"].append(built)
                    runs[name]["locate"].append(first)
        for name, kinds in runs.items():
            for kind, rows in kinds.items():
                print(
                    json.dumps(
                        {
                            "run": f"{name}: {kind}",
                            "code": str(trees[name]),
                            "wall_s": [round(r[0], 2) for r in rows],
                            "median_wall_s": round(statistics.median(r[0] for r in rows), 2),
                            "median_cpu_s": round(statistics.median(r[2] for r in rows), 2),
                            "peak_rss_mb": round(max(r[3] for r in rows)),
                        }
                    )
                )
    print(json.dumps({"load": os.getloadavg()}))


if __name__ == "__main__":
    main()
