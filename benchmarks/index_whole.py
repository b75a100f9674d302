"""The whole `netvlad index` command on a new library vs the reference port's extraction loop.

    python benchmarks/index_whole.py                         # 96 photos, default model
    python benchmarks/index_whole.py --sizes 96 500 2000
    python benchmarks/index_whole.py --model vgg16-netvlad --backbone-weights none --sizes 24

What a user waits for is the whole command: start-up, scan, the NetVLAD initialisation, extraction,
the search index. For each size this times, in fresh subprocesses:

- ``netvlad index LIB --index DIR`` start to finish on a new library (real photos from
  ../shared, repeated under other names: symlinks in a temp folder), its peak RSS, and the time
  from the command to the first photo through the network (from its progress on stderr);
- the same command again with nothing new (the no-op re-run);
- the reference port's extraction loop (``extract.py``'s baseline worker, same model file, same
  photos; on at most ``--port-max`` of them, since its rate does not depend on the count).

The ratio is the whole command's images/s over the port loop's, both measured in this run.

``--peak`` adds the fraction of the CPU's fp32 peak that the whole command reaches: the
backbone's FLOPs per 640x480 photo (torch's flop counter) times images/s, over the best large
fp32 matmul measured in this process after the runs (``peak.py``'s measure). On a CPU without
native bf16 this is the figure issue 14 asks for VGG16.

``--code DIR [DIR ...]`` runs the command from other source trees too (e.g. an export of main:
``git archive main | tar -x -C /tmp/main``), alternating with this one on the same library, so
that a before/after on a shared machine sees the same load.

``--runtimes default torch onnxruntime auto`` runs each tree with each runtime (``--runtime``;
``default``: no flag, each tree's own default), alternating; ``--rounds N`` repeats the
new-library build N times (fresh index folders, same order each round) and reports the median
(``whole_s_rounds`` lists them all). The commands use a cache folder of their own
(``XDG_CACHE_HOME``); a first build of 8 photos per tree and runtime, before the timed rounds,
makes what a model's first use makes once (the ONNX graph: ``first_use_s``), so that the rounds
time the steady state (``--cold-cache``: no such warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from extract import photos, run_worker

# tqdm's "stage:  3%|...| 3/96" (or "stage: 3/96"): the first count >= 1 outside the scan
_PROGRESS = re.compile(r"([A-Za-z][\w -]*?):\s[^\r\n]*?(\d+)/(\d+)")


def make_library(root: Path, n: int) -> Path:
    """``n`` real photos under distinct names (symlinks), in folders of 100 like a camera's."""
    lib = root / f"lib{n}"
    for i, src in enumerate(photos(n)):
        sub = lib / f"{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"IMG_{i:05d}{src.suffix.lower()}").symlink_to(src)
    return lib


def run_index(lib: Path, index_dir: Path, extra: list[str], code: Path | None = None) -> dict:
    """One ``netvlad index`` in a subprocess: wall time, first photo, peak RSS, its summary.

    ``code``: the source tree to run (first on PYTHONPATH); default the one on the path now.
    """
    cmd = [sys.executable, "-m", "netvlad_gui.cli", "index", str(lib), "--index", str(index_dir)]
    cmd += ["--json", *extra]
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    # cwd outside any source tree: ``-m`` puts the cwd first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=index_dir.parent
    )
    first: list[float] = []
    stages: dict[str, float] = {}
    err_tail: list[str] = []

    def read_stderr() -> None:
        buf = ""
        while chunk := proc.stderr.read1(4096).decode(errors="replace"):
            now = time.perf_counter() - t0
            buf = (buf + chunk)[-4000:]
            err_tail.append(chunk)
            for m in _PROGRESS.finditer(chunk):
                stage, done = m.group(1).strip(), int(m.group(2))
                stages.setdefault(stage, now)
                if not first and stage not in ("scan", "model", "prepare") and done >= 1:
                    first.append(now)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    reader.join(5)
    if proc.returncode != 0:
        raise RuntimeError(
            f"netvlad index failed ({proc.returncode}):\n{''.join(err_tail)[-3000:]}"
        )
    summary = json.loads(out.strip().splitlines()[-1])
    return {
        "seconds": round(secs, 2),
        "first_photo_s": round(first[0], 2) if first else None,
        "stage_starts_s": {k: round(v, 2) for k, v in stages.items()},
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # all threads: not inflated by load
        "extracted": summary.get("extracted"),
        "indexed": summary.get("indexed"),
    }


def one_size(tmp: Path, n: int, args) -> list[dict]:
    lib = make_library(tmp, n)
    extra = ["--model", args.model]
    if args.backbone_weights:
        extra += ["--backbone-weights", args.backbone_weights]
    runs = [(c, r) for c in [None, *args.code] for r in args.runtimes]

    def with_runtime(r: str) -> list[str]:
        return [*extra, "--runtime", r] if r != "default" else extra

    def dir_of(k: int, rnd: int) -> Path:
        return tmp / f"index{n}-{k}-{rnd}"

    first_use = [None] * len(runs)
    if not args.cold_cache:  # what a model's first use makes (its ONNX graph), made once
        warm_lib = (
            make_library(tmp / "warm", 8) if not (tmp / "warm").exists() else tmp / "warm/lib8"
        )
        for k, (c, r) in enumerate(runs):
            first_use[k] = run_index(warm_lib, tmp / f"warm-{n}-{k}", with_runtime(r), c)["seconds"]

    rounds = [
        [run_index(lib, dir_of(k, i), with_runtime(r), c) for k, (c, r) in enumerate(runs)]
        for i in range(args.rounds)
    ]
    last = args.rounds - 1
    noop = [run_index(lib, dir_of(k, last), with_runtime(r), c) for k, (c, r) in enumerate(runs)]
    port_paths = [str(p) for p in photos(min(n, args.port_max))]
    port = run_worker(
        ["baseline", str(dir_of(0, 0) / "model.pt"), json.dumps(port_paths), str(tmp / "port.npy")]
    )
    rows = []
    for k, ((code, runtime), b) in enumerate(zip(runs, noop, strict=True)):
        times = [rnd[k]["seconds"] for rnd in rounds]
        a = sorted((rnd[k] for rnd in rounds), key=lambda r: r["seconds"])[len(rounds) // 2]
        ours_ips = n / a["seconds"]
        rows.append(
            {
                "photos": n,
                "code": str(code) if code else "this tree",
                "runtime": runtime,
                "model": args.model,
                "whole_s": a["seconds"],
                "whole_s_rounds": times,
                "whole_images_per_s": round(ours_ips, 3),
                "port_images_per_s": round(port["images_per_s"], 3),
                "port_photos": len(port_paths),
                "ratio_vs_port": round(ours_ips / port["images_per_s"], 2),
                "first_photo_s": a["first_photo_s"],
                "stage_starts_s": a["stage_starts_s"],
                "noop_rerun_s": b["seconds"],
                "first_use_s": first_use[k],
                "peak_rss_mb": a["peak_rss_mb"],
                "cpu_s": a["cpu_s"],
                "load": os.getloadavg(),
                "noop_peak_rss_mb": b["peak_rss_mb"],
                "extracted": a["extracted"],
            }
        )
    return rows


def add_fraction_of_peak(rows: list[dict], model: str) -> None:
    """GFLOP/s of the whole command and of the port loop over torch's fp32 matmul peak."""
    import torch
    from peak import backbone_flops, matmul_peak

    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.model.network import build_model

    net = build_model(ModelConfig.from_name(model), "none", progress=False).backbone.eval()
    gflop = backbone_flops(net, 480, 640) / 1e9
    peak = matmul_peak(torch.float32)["best_gflops"]
    for r in rows:
        r["gflop_per_image"] = round(gflop, 1)
        r["fp32_peak_gflops"] = peak
        r["whole_fraction_of_peak"] = round(r["whole_images_per_s"] * gflop / peak, 3)
        r["port_fraction_of_peak"] = round(r["port_images_per_s"] * gflop / peak, 3)
        print(
            json.dumps(
                {
                    k: r[k]
                    for k in (
                        "photos",
                        "code",
                        "whole_fraction_of_peak",
                        "port_fraction_of_peak",
                        "fp32_peak_gflops",
                    )
                }
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2-netvlad")
    ap.add_argument("--backbone-weights", help="e.g. none for VGG16 (random weights, same FLOPs)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96])
    ap.add_argument("--port-max", type=int, default=96, help="photos for the port's loop")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--code", type=Path, nargs="*", default=[], help="other trees to compare")
    ap.add_argument("--peak", action="store_true", help="add the fraction of the fp32 peak")
    ap.add_argument(
        "--runtimes",
        nargs="+",
        default=["default"],
        choices=["default", "auto", "torch", "onnxruntime"],
        help="runtimes to run each tree with (netvlad index --runtime; default: no flag), "
        "alternating",
    )
    ap.add_argument(
        "--cold-cache", action="store_true", help="no warm-up build: the first round exports"
    )
    ap.add_argument("--rounds", type=int, default=1, help="new-library builds each (median)")
    args = ap.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # A cache of the commands' own (the ONNX export), torch's hub folder where it was.
        hub = os.environ.get("TORCH_HOME") or str(Path.home() / ".cache" / "torch")
        os.environ.update(XDG_CACHE_HOME=str(Path(tmp) / "cache"), TORCH_HOME=hub)
        for n in args.sizes:
            for row in one_size(Path(tmp), n, args):
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.peak:
        add_fraction_of_peak(rows, args.model)
    print()
    cols = ("photos", "code", "runtime", "whole_s", "whole_images_per_s", "port_images_per_s")
    cols += ("ratio_vs_port",)
    cols += ("first_photo_s", "noop_rerun_s", "peak_rss_mb")
    print("  ".join(f"{c:>18}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]!s:>18}" for c in cols))
    result = {"benchmark": "index_whole", "rows": rows, "machine": info}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
