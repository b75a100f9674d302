"""End-to-end locate latency on ../shared/data/lund_street: cold (CLI) and warm (GUI-like).

    python benchmarks/locate_latency.py [--model mobilenet_v2-netvlad] [--repeat 3]

- cold: process start to the JSON line of ``netvlad locate PHOTO --index IDX --json``;
- warm: in one process that has a ``Locator`` loaded, the next photo (what the GUI sees), split
  into decode + forward and search + consensus. Measured with the process tuned
  (``tune_process()``, as the CLI and GUI run) and, as the baseline in the same run, with
  ``NETVLAD_NO_TUNE=1`` (glibc's default allocator, spinning OpenMP waits).

The index of the 19 references is built once and cached (``$NETVLAD_BENCH_CACHE``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from _real import CACHE, SHARED

LUND = SHARED / "data/lund_street"


def index_dir(model: str) -> Path:
    from netvlad_gui.core.library.builder import build_index

    out = CACHE / f"lund_index_{model}"
    build_index(LUND / "references", out, model_spec=model)  # incremental: nothing if built
    return out


def worker_warm(idx: str) -> dict:
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.model.features import extract_one
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    t0 = time.perf_counter()
    loc = LocateSession(Locator(LibraryIndex(idx)))
    load_s = time.perf_counter() - t0
    queries = sorted((LUND / "queries").glob("*.jpg"))
    loc.locate(queries[0])  # the first photo pays for lazy set-up
    total, fwd = [], []
    for _ in range(2):
        for q in queries[1:]:
            t = time.perf_counter()
            loc.locate(q)
            total.append(time.perf_counter() - t)
            t = time.perf_counter()
            extract_one(loc.model, q, loc.extract_cfg)
            fwd.append(time.perf_counter() - t)
    return {
        "locator_load_s": load_s,
        "warm_s_median": statistics.median(total),
        "decode_forward_s_median": statistics.median(fwd),
    }


def cold_once(idx: Path, photo: Path, env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "locate",
            str(photo),
            "--index",
            str(idx),
            "--json",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t
    proc.wait()
    json.loads(line)  # it is the answer
    return elapsed


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker_warm(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2-netvlad")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    idx = index_dir(args.model)
    photo = min((LUND / "queries").glob("*.jpg"))
    rows = {}
    for label, extra in (("baseline (NETVLAD_NO_TUNE=1)", {"NETVLAD_NO_TUNE": "1"}), ("tuned", {})):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | extra
        cold = [cold_once(idx, photo, env) for _ in range(args.repeat)]
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(idx)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        warm = json.loads(out.stdout.strip().splitlines()[-1])
        rows[label] = {"cold_s_median": statistics.median(cold)} | warm
        print(json.dumps({label: rows[label]}), flush=True)
    base, ours = rows["baseline (NETVLAD_NO_TUNE=1)"], rows["tuned"]
    result = {
        "benchmark": "locate_latency",
        "model": args.model,
        "machine": info,
        "rows": rows,
        "warm_speedup_vs_untuned": round(base["warm_s_median"] / ours["warm_s_median"], 2),
        "cold_speedup_vs_untuned": round(base["cold_s_median"] / ours["cold_s_median"], 2),
    }
    print()
    print(f"{'':30} {'cold s':>7} {'warm s':>7} {'fwd s':>7} {'load s':>7}")
    for label, r in rows.items():
        print(
            f"{label:30} {r['cold_s_median']:>7.2f} {r['warm_s_median']:>7.3f} "
            f"{r['decode_forward_s_median']:>7.3f} {r['locator_load_s']:>7.2f}"
        )
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
