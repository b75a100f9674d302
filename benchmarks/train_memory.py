"""Peak memory of `netvlad train`, all its processes together, epoch by epoch: it must stay under
4 GB and flat across epochs, on 200 and on 2 000 photos at 640 px.

    python benchmarks/train_memory.py                         # 200 and 2000 photos, 3 epochs
    python benchmarks/train_memory.py --sizes 200 --epochs 4 -- --lr 1e-3

The photos are gardens_point's (../shared/data/gardens_point): half of them day_right frames as
the database, half night_right frames as the queries, `--frame-spacing-m 3`. 200 photos are the
100 shared places once; 2 000 repeat them, as symlinks under new names, ten times along a line
ten times as long (a frame repeated 300 m away is a negative of itself: fine for memory).

`netvlad train` runs in its own process; its process tree (workers included, if any) is sampled
every 0.25 s: the sum of the resident sets (RSS, shared pages counted per process: the strict
figure) and of the proportional sets (PSS), per epoch (the phase before the first epoch ends is
"set-up"). A watchdog kills the tree above --kill-mb, before the kernel's OOM killer would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from _memory import TreeSampler
from _real import SHARED

GP = SHARED / "data" / "gardens_point"


def make_pair(root: Path, photos: int) -> tuple[Path, Path]:
    db, q = root / "database", root / "queries"
    db.mkdir(parents=True)
    q.mkdir()
    for i in range(photos // 2):
        frame = 100 + i % 100
        (db / f"f{i:05d}.jpg").symlink_to(GP / "day_right" / f"Image{frame:03d}.jpg")
        (q / f"f{i:05d}.jpg").symlink_to(GP / "night_right" / f"Image{frame:03d}.jpg")
    return db, q


def run(photos: int, epochs: int, work: Path, extra: list[str], kill_mb: float) -> dict:
    db, q = make_pair(work / f"pair{photos}", photos)
    cmd = [
        sys.executable,
        "-m",
        "netvlad_gui.cli",
        "train",
        "--database",
        str(db),
        "--queries",
        str(q),
        "--frame-spacing-m",
        "3",
        "--epochs",
        str(epochs),
        "--out",
        str(work / f"run{photos}"),
        "--json-progress",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid, interval=0.25, kill_mb=kill_mb).start()
    sampler.mark("set-up")
    seconds = []
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "step" and sampler.marker == "set-up":
            sampler.mark(f"epoch {ev['epoch']}")
        if ev.get("event") == "epoch":
            seconds.append(ev["seconds"])
            sampler.mark(f"epoch {ev['epoch'] + 1}" if ev["epoch"] < epochs else "finish")
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.stop()
    if status != 0:
        raise RuntimeError(
            f"netvlad train on {photos} photos failed (status {status}, killed by the watchdog: "
            f"{sampler.killed}): {err[-1500:]}"
        )
    by_phase = {k: round(v) for k, v in sampler.peak_by_marker().items()}
    return {
        "photos": photos,
        "epochs": epochs,
        "peak_rss_tree_mb": round(sampler.peak_rss_mb),
        "peak_pss_tree_mb": round(sampler.peak_pss_mb),
        "peak_rss_by_phase_mb": by_phase,
        "max_processes": sampler.peak_procs,
        "largest_process_mb": round(usage.ru_maxrss / 1024),
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "epoch_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--kill-mb", type=float, default=6000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    ap.add_argument("extra", nargs="*", help="more `netvlad train` options, after --")
    args = ap.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in args.sizes:
            rows.append(run(n, args.epochs, Path(tmp), args.extra, args.kill_mb))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'photos':>7} {'peak RSS MB':>12} {'peak PSS MB':>12} {'procs':>6}  per phase (RSS MB)")
    for r in rows:
        phases = ", ".join(f"{k} {v}" for k, v in r["peak_rss_by_phase_mb"].items())
        print(
            f"{r['photos']:>7} {r['peak_rss_tree_mb']:>12} {r['peak_pss_tree_mb']:>12} "
            f"{r['max_processes']:>6}  {phases}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    result = {"benchmark": "train_memory", "machine": info, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
