"""Retraining under appearance change: Recall@1/5 on held-out places before and after
`netvlad train`, both pairings of gardens_point (night -> day_right, night -> day_left).

    python benchmarks/daynight_retrain.py                      # the defaults of `netvlad train`
    python benchmarks/daynight_retrain.py --train-args "--lr 1e-4 --epochs 4"
    python benchmarks/daynight_retrain.py --split 150 --json out.json

The split: the shared walk's places 100-149 train (database day_right, queries night_right,
`--frame-spacing-m 3`), places 150-199 are held out (never seen by training). The training run
gets the held-out night -> day_right pairing as its validation set (`--val-* --val-gt`, index
ground truth: a night photo's correct references are the day frames within +-2), which is also
what the run reports as its held-out figure. Afterwards every model is measured with
`netvlad eval`'s own path (the extraction an index uses), on both pairings:

- ``before (training db)``: the default model, NetVLAD initialised (k-means) on the training
  database, what `netvlad train` calls the model before retraining;
- ``before (library)``: the default model initialised on the held-out database itself, as an
  index of that library would be;
- ``after``: the run's model.pt.

`netvlad train` runs in its own process under a watchdog (its whole process tree is killed above
--kill-mb); peak RSS is the largest sum over the tree, sampled every 0.25 s; CPU is the
process's user + system time (``wait4``). Figures go to benchmarks/README.md, "Retraining".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
FIRST, LAST = 100, 200  # the shared places
GT_FRAMES = 2  # a night query's correct day frames: +-2, as the shared ground truth


def make_layout(root: Path, split: int) -> dict[str, Path]:
    """Symlinked folders of the training stretch and the held-out stretch, and the gt CSVs."""
    parts = {
        "train_db": ("day_right", FIRST, split),
        "train_q": ("night_right", FIRST, split),
        "ho_right": ("day_right", split, LAST),
        "ho_left": ("day_left", split, LAST),
        "ho_night": ("night_right", split, LAST),
    }
    out = {}
    for name, (cond, lo, hi) in parts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(lo, hi):
            (folder / f"Image{i:03d}.jpg").symlink_to(GP / cond / f"Image{i:03d}.jpg")
        out[name] = folder
    for side in ("right", "left"):
        rows = ["query,refs"]
        for i in range(split, LAST):
            near = range(max(split, i - GT_FRAMES), min(LAST - 1, i + GT_FRAMES) + 1)
            rows.append(
                f"ho_night/Image{i:03d}.jpg,"
                + ";".join(f"ho_{side}/Image{j:03d}.jpg" for j in near)
            )
        (root / f"gt_{side}.csv").write_text("\n".join(rows) + "\n")
        out[f"gt_{side}"] = root / f"gt_{side}.csv"
    return out


def run_train(layout: dict[str, Path], run_dir: Path, extra: list[str], kill_mb: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "netvlad_gui.cli",
        "train",
        "--database",
        str(layout["train_db"]),
        "--queries",
        str(layout["train_q"]),
        "--frame-spacing-m",
        "3",
        "--val-database",
        str(layout["ho_right"]),
        "--val-queries",
        str(layout["ho_night"]),
        "--val-gt",
        str(layout["gt_right"]),
        "--out",
        str(run_dir),
        "--json-progress",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid, interval=0.25, kill_mb=kill_mb).start()
    events = []
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        events.append(ev)
        if ev.get("event") == "epoch":
            sampler.mark(f"epoch {ev['epoch']}")
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.stop()
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(
            f"netvlad train failed ({status}; killed: {sampler.killed}): {err[-2000:]}"
        )
    done = next(e for e in events if e["event"] == "done")
    epochs = [e for e in events if e["event"] == "epoch"]
    return {
        "command": shlex.join(["netvlad", "train", *cmd[4:]]),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_tree_mb": round(sampler.peak_rss_mb),
        "peak_pss_tree_mb": round(sampler.peak_pss_mb),
        "max_processes": sampler.peak_procs,
        "epochs": len(epochs),
        "epoch_seconds": [e["seconds"] for e in epochs],
        "tuples": [e["tuples"] for e in epochs],
        "val_recall1": [e["recall@1"] for e in events if e["event"] == "val"],
        "heldout": done.get("heldout"),
        "model": done["model"],
    }


def measure(model_spec, layout: dict[str, Path], init_db: Path | None) -> dict:
    """Recall@1/5 of a model on both held-out pairings, as `netvlad eval` measures."""
    from netvlad_gui.core.config import ExtractConfig, InitConfig
    from netvlad_gui.core.model.initialise import initialise_from_images
    from netvlad_gui.core.model.resolve import resolve_model
    from netvlad_gui.core.photos.images import list_images
    from netvlad_gui.core.training.datasets import load_pair
    from netvlad_gui.core.training.evaluate import evaluate_model

    ecfg = ExtractConfig()
    out = {}
    for side in ("right", "left"):
        model = resolve_model(model_spec)
        if init_db is not None:
            initialise_from_images(model, list_images(init_db), InitConfig(), ecfg)
        ps = load_pair(layout[f"ho_{side}"], layout["ho_night"], gt_csv=layout[f"gt_{side}"])
        res = evaluate_model(model, ps, ecfg)
        out[f"night->day_{side}"] = {
            "recall@1": round(res.recalls[1], 4),
            "recall@5": round(res.recalls[5], 4),
            "queries": res.queries,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", type=int, default=150, help="first held-out place (default 150)")
    ap.add_argument("--train-args", default="", help="more `netvlad train` options")
    ap.add_argument("--kill-mb", type=float, default=6000, help="watchdog: kill the tree above")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.runtime import backbone_precision, tune_process

    tune_process()
    info = machine()
    info["backbone_precision"] = backbone_precision(ExtractConfig())
    print(json.dumps({"machine": info}), flush=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        layout = make_layout(Path(tmp) / "gp", args.split)
        train = run_train(layout, Path(tmp) / "run", shlex.split(args.train_args), args.kill_mb)
        print(json.dumps({"train": train}), flush=True)
        rows = {
            "before (training db)": measure(None, layout, layout["train_db"]),
            "before (library)": measure(None, layout, None),
            "after": measure(train["model"], layout, None),
        }
    print(json.dumps({"recalls": rows}), flush=True)
    split = f"train on places {FIRST}-{args.split - 1}, held out {args.split}-{LAST - 1}"
    print(f"\n{split}; netvlad train {args.train_args or '(defaults)'}")
    print(f"{'model':22} {'night->day_right R@1/R@5':>26} {'night->day_left R@1/R@5':>26}")
    for name, r in rows.items():
        cells = [
            f"{100 * r[k]['recall@1']:5.1f} / {100 * r[k]['recall@5']:5.1f}"
            for k in ("night->day_right", "night->day_left")
        ]
        print(f"{name:22} {cells[0]:>26} {cells[1]:>26}")
    b, a = rows["before (training db)"], rows["after"]
    for k in ("night->day_right", "night->day_left"):
        print(f"gain {k}: {100 * (a[k]['recall@1'] - b[k]['recall@1']):+.1f} points R@1")
    print(
        f"time {train['wall_s']} s wall, {train['cpu_s']} s CPU; peak RSS of the process tree "
        f"{train['peak_rss_tree_mb']} MB (PSS {train['peak_pss_tree_mb']} MB), "
        f"{train['max_processes']} processes; load average {os.getloadavg()[0]:.1f}"
    )
    result = {"benchmark": "daynight_retrain", "machine": info, "split": split, "train": train}
    result["recalls"] = rows
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
