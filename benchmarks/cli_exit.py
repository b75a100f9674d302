"""How long a ``netvlad`` command takes to end after its last output: the interpreter's teardown.

    python benchmarks/cli_exit.py                         # locate one lund photo, this tree
    python benchmarks/cli_exit.py --code /tmp/old         # alternate with another source tree
    python benchmarks/cli_exit.py --rounds 3 -- index LIB --index DIR --json

Each round runs the command in a fresh process (per source tree, alternating) and reports the
wall time and the seconds from its last line on stdout to its exit. A command that loaded torch
and torchvision used to spend about a second there, in the garbage collector's final pass over
what they created; ``netvlad_gui.cli.run`` freezes the collector first (``gc.freeze``). The
default command locates one lund photo in an index built here first (the lund references).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _common import machine

LUND = REPO.parent / "shared" / "data" / "lund_street"


def timed(argv: list[str], code: Path, cwd: Path) -> tuple[float, float, float, float]:
    """(wall s, s from the last stdout line to the exit, CPU s, peak RSS MB) of ``python -m
    netvlad_gui.cli ARGV``; the CPU seconds (user + system, all threads) do not grow with a
    shared machine's load the way the wall time does."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netvlad_gui.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,  # outside any source tree: -m puts the cwd first on sys.path
    )
    last = t0
    for _ in proc.stdout:
        last = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"netvlad {' '.join(argv)} failed ({status}) with {code}")
    end = time.perf_counter()
    return end - t0, end - last, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, action="append", default=[], help="another tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("command", nargs="*", help="netvlad's arguments (after --)")
    args = ap.parse_args()
    trees = [REPO, *args.code]
    print(json.dumps({"machine": machine()}))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the commands' own cache
        argv = args.command
        if not argv:
            index = Path(tmp) / "lund-index"
            timed(["index", str(LUND / "references"), "--index", str(index), "-q"], REPO, Path(tmp))
            argv = ["locate", "--index", str(index), str(LUND / "queries" / "08.jpg")]
        rows: dict[str, list[tuple]] = {str(t): [] for t in trees}
        for _ in range(args.rounds):
            for tree in trees:
                rows[str(tree)].append(timed(argv, tree, Path(tmp)))
    for tree, runs in rows.items():
        out = {
            "code": tree,
            "command": "netvlad " + " ".join(args.command or ["locate", "INDEX", "08.jpg"]),
            "wall_s": [round(r[0], 2) for r in runs],
            "median_wall_s": round(statistics.median(r[0] for r in runs), 2),
            "cpu_s": [round(r[2], 2) for r in runs],
            "median_cpu_s": round(statistics.median(r[2] for r in runs), 2),
            "exit_s": [round(r[1], 2) for r in runs],
            "median_exit_s": round(statistics.median(r[1] for r in runs), 2),
            "peak_rss_mb": round(max(r[3] for r in runs)),
            "load": os.getloadavg(),
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
