"""Peak memory of `netvlad index` as the library grows: it must stay flat (descriptors stream).

    python benchmarks/index_memory.py                      # 100 and 1000 photos
    python benchmarks/index_memory.py --sizes 100 1000 5000

The library is the real photos of ../shared/data/lund_street and exif/gps_photos (1-8 MP),
hard-linked under different names in a temp folder. Each size is a fresh `netvlad index` process;
its peak RSS comes from wait4() (the largest process of its tree: the CLI, or a decode worker).
The ratio to the smallest size is the figure that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from _real import SHARED


def make_library(root: Path, n: int) -> None:
    photos = sorted((SHARED / "data/lund_street").rglob("*.jpg"))
    photos += sorted((SHARED / "data/exif/gps_photos").rglob("*.[jJ][pP][gG]"))
    root.mkdir(parents=True)
    for i in range(n):
        src = photos[i % len(photos)]
        dst = root / f"{i // 1000:03d}" / f"p{i:06d}{src.suffix.lower()}"
        dst.parent.mkdir(exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system: a symlink reads the same
            dst.symlink_to(src)


def run(n: int, work: Path, extra: list[str]) -> dict:
    lib, idx = work / f"lib{n}", work / f"idx{n}"
    make_library(lib, n)
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "index",
            str(lib),
            "--index",
            str(idx),
            "--json",
            "-q",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"netvlad index failed on {n} photos (status {status})")
    summary = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(lib)
    shutil.rmtree(idx)
    return {
        "photos": n,
        "indexed": summary["indexed"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(secs, 1),
        "images_per_s": round(summary["indexed"] / secs, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    ap.add_argument("extra", nargs="*", help="more `netvlad index` options, after --")
    args = ap.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in args.sizes:
            rows.append(run(n, Path(tmp), args.extra))
            rows[-1]["rss_vs_smallest"] = round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'photos':>7} {'peak RSS MB':>12} {'x smallest':>10} {'s':>8} {'img/s':>7}")
    for r in rows:
        print(
            f"{r['photos']:>7} {r['peak_rss_mb']:>12} {r['rss_vs_smallest']:>10} "
            f"{r['seconds']:>8} {r['images_per_s']:>7}"
        )
    result = {"benchmark": "index_memory", "machine": info, "rows": rows}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
