"""Sequences on gardens_point: night photos located in groups of consecutive photos, against day.

    python benchmarks/sequence.py                        # both pairings, groups 1/3/5/10/20
    python benchmarks/sequence.py --video                # + reading a 10-minute video

Descriptors come from the project's own ``netvlad eval`` path (the default model, its NetVLAD
layer initialised on the day folder, ``set_descriptors``: fp32 whatever ``precision`` says, as
``netvlad eval`` measures), cached in ``$NETVLAD_BENCH_CACHE`` (default /tmp/netvlad_bench).
gardens_point has no GPS and no capture times: frame i is placed at 3*i metres along a line
(synthetic GPS) and the photos are in file order. Ground truth is the folder's index
criterion (a night frame matches day frames within +-2).

Per pairing and group size n (the 100 night photos cut into consecutive groups of n), Recall@1
per photo of:

- ``single``: each photo's own best match (n = 1 is this, by definition);
- ``single_hub``: the same, after the library's hubness correction (sequence.hubness);
- ``diagonal``: SeqSLAM's diagonal: one constant velocity along the references' order (+-0.5
  to 2 frames per photo, either direction) through the whole group, mean similarity;
- ``hmm1``: a first-order HMM on the same places and scores (distance between consecutive
  places only, within the step limit): the model of motion without velocity;
- ``track``: ``core.query.sequence.locate_sequence`` with the default SequenceConfig;
- ``track_nohub``: the same without the hubness correction;
- ``track_timed``: ``track`` with synthetic capture times (frame i at 2*i s, 1.5 m/s), so
  that the step limit comes from ``speed_mps`` times the time between photos.

Controls: shuffled photos (3 random orders) must be no worse than single photos, and a group
of one must give exactly the single answers. ``ms_per_photo`` (wall) and
``cpu_ms_per_photo`` (this process's CPU time, less sensitive to a shared machine's load) time
``locate_sequence`` alone (K = 20 candidates per photo); the load is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import cpu_flags, cpu_model
from _real import CACHE, SHARED

GARDENS = SHARED / "data" / "gardens_point"
PAIRINGS = ("day_right", "day_left")
SPACING_M = 3.0
LAT0, LON0 = -27.4775, 153.0280  # QUT Gardens Point, for the synthetic line
GROUPS = (1, 3, 5, 10, 20)
K = 20


def descriptors(side: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(day descriptors, night descriptors, correct day indices per night photo), cached."""
    from netvlad_gui.core.training.datasets import load_pair

    ps = load_pair(
        GARDENS / side, GARDENS / "night_right", gt_csv=GARDENS / f"gt_night_right_to_{side}.csv"
    )
    npz = CACHE / f"sequence_gardens_{side}.npz"
    if not npz.exists():
        from netvlad_gui.core.config import DEFAULT_MODEL, ExtractConfig, InitConfig
        from netvlad_gui.core.model.resolve import resolve_model
        from netvlad_gui.core.training.descriptors import set_descriptors
        from netvlad_gui.core.training.evaluate import prepare_model

        cfg = ExtractConfig(device="cpu")
        model = resolve_model(DEFAULT_MODEL)
        prepare_model(model, ps, cfg, InitConfig())
        db, q, errors = set_descriptors(model, ps, cfg)
        if errors:
            raise SystemExit(f"unreadable photos: {errors}")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(npz, db=db, q=q)
    data = np.load(npz)
    return data["db"], data["q"], list(ps.q_gt)


def line_lon(n: int) -> np.ndarray:
    return LON0 + np.degrees(
        SPACING_M * np.arange(n) / (6_371_008.8 * math.cos(math.radians(LAT0)))
    )


class Pairing:
    """One pairing's descriptors, references and candidates, and the methods measured on it."""

    def __init__(self, side: str) -> None:
        from netvlad_gui.core.config import SequenceConfig
        from netvlad_gui.core.query.sequence import PhotoCandidates, ReferenceInfo, hubness

        self.side = side
        self.db, self.q, self.gt = descriptors(side)
        n = len(self.db)
        self.lat, self.lon = np.full(n, LAT0), line_lon(n)
        self.S = self.q @ self.db.T
        self.hub = hubness(self.db, self.lat, self.lon)
        self.cfg = SequenceConfig()

        def refs(hub: bool):
            return ReferenceInfo(
                np.arange(n),
                self.lat,
                self.lon,
                descriptors=lambda ids: self.db[ids],
                hubness=self.hub if hub else None,
            )

        self.refs, self.refs_nohub = refs(True), refs(False)
        self.photos = []
        for t in range(len(self.q)):
            top = np.argsort(-self.S[t], kind="stable")[:K]
            self.photos.append(PhotoCandidates(top, self.S[t, top], descriptor=self.q[t]))

    def hit(self, t: int, ref: int) -> bool:
        return int(ref) in set(self.gt[t].tolist())

    # --- the methods: each maps a group (night indices, in order) to one day index per photo
    def single(self, g):
        return self.S[g].argmax(1)

    def single_hub(self, g):
        return (self.S[g] - self.hub[None, :]).argmax(1)

    def diagonal(self, g):
        if len(g) == 1:
            return self.single(g)
        sg, n, best, out = self.S[g], len(g), -np.inf, None
        t = np.arange(n) - (n - 1) / 2
        for v in (-2, -1.5, -1.25, -1, -0.75, -0.5, 0.5, 0.75, 1, 1.25, 1.5, 2):
            for j0 in range(self.S.shape[1]):
                js = np.round(j0 + v * t).astype(int)
                if js.min() < 0 or js.max() >= self.S.shape[1]:
                    continue
                score = sg[np.arange(n), js].mean()
                if score > best:
                    best, out = score, js
        return out if out is not None else self.single(g)

    def hmm1(self, g):
        """First order: P(next place | place) uniform within the step limit, else nothing."""
        if len(g) == 1:
            return self.single(g)
        e = (self.S[g] - self.hub[None, :]) / self.cfg.temperature
        x = SPACING_M * np.arange(self.S.shape[1])
        step = np.abs(x[:, None] - x[None, :]) <= self.cfg.untimed_step_m
        tr = np.where(step, 0.0, -np.inf)
        tr = tr - np.log(step.sum(1, keepdims=True))
        lse = lambda a, axis: np.logaddexp.reduce(a, axis=axis)
        fw = np.zeros_like(e)
        fw[0] = e[0]
        for s in range(1, len(g)):
            fw[s] = lse(fw[s - 1][:, None] + tr, 0) + e[s]
            fw[s] -= fw[s].max()
        bw = np.zeros_like(e)
        for s in range(len(g) - 2, -1, -1):
            bw[s] = lse(tr + (e[s + 1] + bw[s + 1])[None, :], 1)
            bw[s] -= bw[s].max()
        return (fw + bw).argmax(1)

    def _track(self, g, refs):
        from netvlad_gui.core.query.sequence import locate_sequence

        return np.array(
            [o.ref_id for o in locate_sequence([self.photos[t] for t in g], refs, self.cfg)]
        )

    def track(self, g):
        return self._track(g, self.refs)

    def track_nohub(self, g):
        return self._track(g, self.refs_nohub)

    def track_timed(self, g):
        """With synthetic capture times: frame i taken at 2*i s (1.5 m/s on the 3 m line)."""
        from dataclasses import replace

        from netvlad_gui.core.query.sequence import locate_sequence

        photos = [replace(self.photos[t], time_s=2.0 * t) for t in g]
        return np.array([o.ref_id for o in locate_sequence(photos, self.refs, self.cfg)])

    def recall(self, method, n: int, order: np.ndarray | None = None) -> tuple:
        """(Recall@1, answers that differ from single, wall and CPU seconds per photo)."""
        idx = np.arange(len(self.q)) if order is None else order
        hits = changed = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(idx), n):
            g = idx[i : i + n]
            pred = method(g)
            hits += sum(self.hit(t, p) for t, p in zip(g, pred, strict=True))
            changed += int((pred != self.single(g)).sum())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return hits / len(idx), changed, wall / len(idx), cpu / len(idx)


METHODS = ("single", "single_hub", "diagonal", "hmm1", "track", "track_nohub", "track_timed")


def measure(side: str, out: list[dict]) -> None:
    p = Pairing(side)
    single = p.recall(p.single, 1)[0]
    for name in METHODS:
        for n in GROUPS:
            r, changed, sec, cpu = p.recall(getattr(p, name), n)
            row = {
                "pairing": side,
                "method": name,
                "group": n,
                "recall@1": round(r, 3),
                "changed": changed,
                "ms_per_photo": round(1000 * sec, 2),
                "cpu_ms_per_photo": round(1000 * cpu, 2),
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    for name in ("track", "diagonal", "hmm1"):
        for n in (5, 10, 20):
            rs, chg = [], 0
            for seed in range(3):
                order = np.random.default_rng(seed).permutation(len(p.q))
                r, c, _, _ = p.recall(getattr(p, name), n, order)
                rs.append(r)
                chg += c
            row = {
                "pairing": side,
                "method": name,
                "group": n,
                "control": "shuffled",
                "recall@1": [round(x, 3) for x in rs],
                "single": round(single, 3),
                "no_worse": bool(min(rs) >= single - 1e-9),
                "changed": chg,
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    alone = p.recall(p.track, 1)[:2]
    row = {
        "pairing": side,
        "method": "track",
        "group": 1,
        "control": "isolated",
        "identical_to_single": alone[1] == 0,
        "recall@1": round(alone[0], 3),
    }
    out.append(row)
    print(json.dumps(row), flush=True)


def write_video(path: Path, minutes: float, fps: float, size: tuple[int, int]) -> None:
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(h, 2 * w, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    for i in range(int(minutes * 60 * fps)):
        x = (3 * i) % w  # a camera panning along a textured wall
        writer.write(np.ascontiguousarray(base[:, x : x + w]))
    writer.release()


def measure_video(out: list[dict], minutes: float = 10.0, every: float = 1.0) -> None:
    """Reading (decode + sample + resize to the model's input), nothing else."""
    from netvlad_gui.core.photos.video import probe, sample_frames

    path = CACHE / f"sequence_video_{minutes:g}min_720p_30fps.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_video(path, minutes, 30.0, (1280, 720))
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    import cv2

    info = probe(path)
    load = os.getloadavg()[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    frames = sum(1 for _ in sample_frames(path, every_s=every))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    # Baseline, same run: every frame decoded and converted (cap.read), the sampled ones kept.
    t0 = time.perf_counter()
    cap, kept, i = cv2.VideoCapture(str(path)), 0, 0
    step = round(every * info.fps)
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        kept += i % step == 0
        i += 1
    cap.release()
    base = time.perf_counter() - t0
    row = {
        "video": path.name,
        "codec": "mp4v",
        "duration_s": round(info.duration_s, 1),
        "fps": info.fps,
        "size": [info.width, info.height],
        "every_s": every,
        "frames_sampled": frames,
        "read_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "baseline_read_every_frame_s": round(base, 1),
        "baseline_frames_kept": kept,
        "speedup_vs_baseline": round(base / wall, 2),
        "load_avg_1min": round(load, 2),
    }
    out.append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairings", nargs="*", default=list(PAIRINGS), choices=PAIRINGS)
    ap.add_argument("--video", action="store_true", help="also time reading a 10-minute video")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not GARDENS.is_dir():
        raise SystemExit(f"gardens_point not found at {GARDENS}")
    import platform

    from netvlad_gui.core.config import SequenceConfig

    out: list[dict] = [
        {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "simd": cpu_flags(),
            "python": platform.python_version(),
            "descriptors": "fp32, netvlad eval's path",
            "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
            "sequence_config": SequenceConfig().__dict__,
        }
    ]
    print(json.dumps(out[0]), flush=True)
    for side in args.pairings:
        measure(side, out)
    if args.video:
        measure_video(out)
    out.append({"load_avg_1min_at_end": round(os.getloadavg()[0], 2)})
    print(json.dumps(out[-1]))
    table(out)
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in out) + "\n")


def table(rows: list[dict]) -> None:
    if not any("method" in r for r in rows):
        return
    print(
        f"\n{'pairing':10} {'method':12} "
        + " ".join(f"n={n:<5}" for n in GROUPS)
        + "  ms/photo wall, CPU (n=10)"
    )
    for side in PAIRINGS:
        for name in METHODS:
            cells = {
                r["group"]: r
                for r in rows
                if r.get("pairing") == side and r.get("method") == name and "control" not in r
            }
            if not cells:
                continue
            line = " ".join(f"{cells[n]['recall@1']:<7.2f}" for n in GROUPS)
            c = cells[10]
            print(
                f"{side:10} {name:12} {line}  {c['ms_per_photo']:.1f}, {c['cpu_ms_per_photo']:.1f}"
            )
    for r in rows:
        if r.get("control") == "shuffled":
            print(
                f"{r['pairing']:10} {r['method']:12} shuffled n={r['group']:<3} R@1 "
                f"{r['recall@1']} vs single {r['single']}: no worse {r['no_worse']}"
            )


if __name__ == "__main__":
    main()
