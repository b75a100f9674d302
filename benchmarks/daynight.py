"""Night photos against a day library (gardens_point): recall, verdicts and time, as a user gets them.

    python benchmarks/daynight.py                               # both pairings + the controls
    python benchmarks/daynight.py --pairings day_right --no-controls
    python benchmarks/daynight.py --features sift               # the verifier before issue 21
    python benchmarks/daynight.py --model RUN/model.pt --frames 150-199 --label "retrained"

For each pairing (night_right -> day_right, night_right -> day_left; ../shared/data/gardens_point,
places 100-199, ground truth ±2 frames) the day walk is a library with synthetic GPS (frame i at
3·i m along a line, a gps.csv beside symlinks in the benchmark cache, see _gardens.py), indexed
by the real builder, and every night photo is located by the real ``Locator`` (default
LocateConfig: K = 10 verified, top 5 shown):

- Recall@1/5 of the global ranking (``locate(verify=False)``) and of the verified one;
- the verdicts (located / uncertain / not_found), each split by whether match #1 is right, and
  the reasons given;
- time per photo: the global step (decode, forward, search) and verification, both in walk
  order (the references' features cache fills as the walk goes on, as when locating a folder)
  and cold (the in-memory cache emptied before each photo) on ``--cold`` photos; wall and CPU
  seconds. The references' features on disk (the index's ``patches.sqlite``) are kept from an
  earlier run unless ``--store empty`` deletes them first or ``--store off`` leaves them unused
  (``VerifyConfig.disk_cache_mb`` 0): with a filled store, "cold" is a new process's locate.

``--controls`` (default on) adds the targets that must not move: the far-away photos (Berlin,
Portland) against the lund library (must all be ``not_found``), the lund queries (``located``
within 25 m), corridor's Recall@1 with and without verification, and a library whose photos
all lie within 25 m of each other (no calibration: never ``located`` without verification).

Retrained models (issue 21, point 3): ``--model`` indexes the library with a checkpoint instead
of the default model (cached per checkpoint), ``--frames A-B`` keeps only the night photos of
places A..B (the held-out stretch), ``--label`` names the row; :func:`evaluate` is the function
to call from another script.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _gardens
from _common import machine
from _real import CACHE, RECALL_M, SHARED


def _index(day: str, model: str | None):
    """The day library's index with the default model, or with checkpoint ``model`` (cached)."""
    if model is None:
        return _gardens.index(day)
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.library.builder import build_index
    from netvlad_gui.core.library.index import LibraryIndex

    digest = hashlib.sha1(Path(model).read_bytes()).hexdigest()[:10]
    idx = CACHE / f"gardens_{day}_index_{digest}"
    if not (idx / "model.pt").exists():
        build_index(
            _gardens.library(day), idx, model_spec=model, extract_cfg=ExtractConfig(device="cpu")
        )
    return LibraryIndex(idx)


def _frames(text: str | None) -> range | None:
    if not text:
        return None
    a, _, b = text.partition("-")
    return range(int(a), int(b or a) + 1)


def evaluate(
    day: str,
    locate_cfg,
    *,
    model: str | None = None,
    frames: range | None = None,
    cold: int = 10,
    empty_store: bool = False,
) -> dict:
    """One pairing (night_right -> ``day``): recall, verdicts and times; see the module doc."""
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    p = _gardens.pairing(day)
    index = _index(day, model)
    if empty_store:
        from netvlad_gui.core.library.patchstore import STORE_FILE

        for suffix in ("", "-wal", "-shm"):
            (index.dir / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)
    loc = Locator(index, extract_cfg=ExtractConfig(device="cpu"), locate_cfg=locate_cfg)
    session = LocateSession(loc, locate_cfg)
    top_n = locate_cfg.top_n
    rows = [
        (q, pos)
        for q, pos in zip(p.queries, p.positives, strict=True)
        if frames is None or p.frame_of(q) in frames
    ]
    from netvlad_gui.core.photos import geo
    from netvlad_gui.core.query.verdict import calibrated_similarity

    glob, ver, verdicts, reasons = [], [], collections.Counter(), collections.Counter()
    unverified, per_photo = collections.Counter(), []
    t_global, t_verify, c_verify = [], [], []
    for q, pos in rows:
        g = session.locate(q, top_n=top_n, verify=False)  # the verdict without the check
        stages = session.stages(q)  # one description: the global stage, then the check
        t0 = time.perf_counter()
        next(stages)
        t_global.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        v = next(stages)
        t_verify.append(time.perf_counter() - t0)
        c_verify.append(time.process_time() - c0)
        glob.append([Path(m.path).name for m in g.matches])
        ver.append([Path(m.path).name for m in v.matches])
        right = bool(v.matches) and Path(v.matches[0].path).name in pos
        verdicts[v.verdict, right] += 1
        reasons[v.verdict, re.sub(r"\d+", "N", v.verdict_reason)] += 1
        g_right = bool(g.matches) and Path(g.matches[0].path).name in pos
        unverified[g.verdict, g_right] += 1
        # the night photos carry no GPS: the error is to the frame's synthetic position
        t_lat, t_lon = _gardens.frame_position(p.frame_of(q))
        err = None if v.lat is None else float(geo.haversine_m(v.lat, v.lon, t_lat, t_lon))
        counted = [m.inliers for m in v.matches if m.inliers is not None]
        sim = calibrated_similarity(g.matches[0].score, loc.calibration) if g.matches else None
        per_photo.append(
            {
                "frame": p.frame_of(q),
                "top1_frame": p.frame_of(v.matches[0].path) if v.matches else None,
                "right": right,
                "verdict": v.verdict,
                "best_inliers": max(counted) if counted else None,
                "similarity": None if sim is None else round(sim, 3),
                "error_m": None if err is None else round(err, 1),
            }
        )
    positives = [pos for _, pos in rows]

    # cold: the references' features cache emptied before each photo (every candidate decoded
    # and described), on photos spread along the walk
    cold_rows = rows[:: max(1, len(rows) // cold)][:cold] if cold else []
    t_cold, c_cold = [], []
    for q, _ in cold_rows:
        stages = session.stages(q)
        next(stages)  # the description and the search
        loc.verifier._cache.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        next(stages)
        t_cold.append(time.perf_counter() - t0)
        c_cold.append(time.process_time() - c0)
    loc.close()

    def split(counter) -> dict:
        return {
            f"{v} ({'#1 right' if r else '#1 wrong'})": counter[v, r]
            for v in ("located", "uncertain", "not_found")
            for r in (True, False)
        }

    n_right = sum(n for (_, r), n in verdicts.items() if r)
    return {
        "pairing": p.name,
        "model": model or "default",
        "frames": f"{frames.start}-{frames.stop - 1}" if frames else "100-199",
        "queries": len(rows),
        "global": [_recall(glob, positives, n) for n in (1, 5)],
        "verified": [_recall(ver, positives, n) for n in (1, 5)],
        "verdicts": split(verdicts),
        "not_found_of_right": round(verdicts["not_found", True] / max(n_right, 1), 3),
        "verdicts_unverified": split(unverified),
        "reasons": {f"{v}: {r}": n for (v, r), n in reasons.most_common()},
        "located_within_25m": sum(
            r["verdict"] == "located" and r["error_m"] is not None and r["error_m"] <= RECALL_M
            for r in per_photo
        ),
        "located": sum(r["verdict"] == "located" for r in per_photo),
        "per_photo": per_photo,
        "time_s": {
            "global_median": _med(t_global),
            "verify_walk_median": _med(t_verify),
            "verify_walk_cpu_median": _med(c_verify),
            # the walk's whole cost per photo: the median hides its first photos, which map
            # every reference (none is in the cache yet) unless the store on disk holds them
            "verify_walk_cpu_mean": round(sum(c_verify) / max(len(c_verify), 1), 3),
            "verify_cold_median": _med(t_cold),
            "verify_cold_cpu_median": _med(c_cold),
            "cold_photos": len(t_cold),
        },
    }


def _med(v: list[float]) -> float | None:
    return round(statistics.median(v), 3) if v else None


def _recall(ranked: list[list[str]], positives: list[set[str]], n: int) -> float:
    hits = sum(bool(set(r[:n]) & p) for r, p in zip(ranked, positives, strict=True))
    return round(hits / max(len(ranked), 1), 3)


def controls(locate_cfg) -> dict:
    """The targets that must not move (see the module doc)."""
    from verify import _far_photos, _index, _sets

    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession
    from netvlad_gui.core.query.verdict import calibrated_similarity

    ecfg = ExtractConfig(device="cpu")
    out: dict = {}
    lund = SHARED / "data/lund_street"
    index = _index("lund", lund / "references", 640)
    loc = Locator(index, extract_cfg=ecfg, locate_cfg=locate_cfg)
    session = LocateSession(loc, locate_cfg)
    out["far_away"] = []
    for q in _far_photos():
        r = session.locate(q)
        out["far_away"].append(
            {
                "photo": q.name,
                "verdict": r.verdict,
                "reason": r.verdict_reason,
                "inliers": _best(r),
                "similarity": calibrated_similarity(
                    max(m.score for m in r.matches), loc.calibration
                ),
            }
        )
    out["lund"] = []
    for q in sorted((lund / "queries").glob("*.jpg")):
        r = session.locate(q)
        out["lund"].append(
            {
                "photo": q.name,
                "verdict": r.verdict,
                "error_m": None if r.error_m is None else round(r.error_m, 1),
                "inliers": _best(r),
            }
        )
    out["lund_located_within_25m"] = sum(
        r["verdict"] == "located" and r["error_m"] is not None and r["error_m"] <= RECALL_M
        for r in out["lund"]
    )
    out["far_away_not_found"] = sum(r["verdict"] == "not_found" for r in out["far_away"])
    index.close()

    library, queries, positives = _sets()["corridor"]
    index = _index("corridor", library, 640)
    session = LocateSession(Locator(index, extract_cfg=ecfg, locate_cfg=locate_cfg), locate_cfg)
    glob, ver = [], []
    for q in queries:
        glob.append([Path(m.path).name for m in session.locate(q, verify=False).matches])
        ver.append([Path(m.path).name for m in session.locate(q, verify=True).matches])
    index.close()
    out["corridor"] = {
        "global": [_recall(glob, positives, n) for n in (1, 5)],
        "verified": [_recall(ver, positives, n) for n in (1, 5)],
    }

    # A library whose photos all lie within 25 m: no different-place pairs, no calibration.
    tight = CACHE / "gardens_tight_library"
    tight.mkdir(parents=True, exist_ok=True)
    frames = range(100, 108)  # 8 frames, 21 m end to end
    rows = []
    for f in frames:
        src = _gardens.GARDENS / "day_right" / f"Image{f}.jpg"
        if not (tight / src.name).exists():
            (tight / src.name).symlink_to(src)
        lat, lon = _gardens.frame_position(f)
        rows.append(f"{src.name},{lat:.8f},{lon:.8f}\n")
    (tight / "gps.csv").write_text("file,lat,lon\n" + "".join(rows))
    from netvlad_gui.core.library.builder import build_index
    from netvlad_gui.core.library.index import LibraryIndex

    idx_dir = CACHE / "gardens_tight_index"
    if not (idx_dir / "model.pt").exists():
        build_index(tight, idx_dir, extract_cfg=ecfg)
    index = LibraryIndex(idx_dir)
    session = LocateSession(Locator(index, extract_cfg=ecfg, locate_cfg=locate_cfg), locate_cfg)
    counts: collections.Counter = collections.Counter()
    for f in frames:
        for day in ("day_right", "night_right"):
            q = _gardens.GARDENS / day / f"Image{f}.jpg"
            counts["unverified " + str(session.locate(q, verify=False).verdict)] += 1
            counts["verified " + str(session.locate(q, verify=True).verdict)] += 1
    out["tight_library"] = {"calibration": index.calibration(), "verdicts": dict(counts)}
    index.close()
    return out


def _best(r) -> int | None:
    counted = [m.inliers for m in r.matches if m.inliers is not None]
    return max(counted) if counted else None


def table(rows: list[dict], label: str) -> str:
    lines = [
        (
            "| model | pairing | places | global R@1 / R@5 | verified R@1 / R@5 | located "
            "(#1 right / wrong) | uncertain (right / wrong) | not_found (right / wrong) | "
            "not_found of #1 right | verify s/photo: walk, cold (CPU s) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v, t = r["verdicts"], r["time_s"]
        cells = [
            f"{v[f'{k} (#1 right)']} / {v[f'{k} (#1 wrong)']}"
            for k in ("located", "uncertain", "not_found")
        ]
        lines.append(
            f"| {label or r['model']} | {r['pairing']} | {r['frames']} | "
            f"{r['global'][0]:.2f} / {r['global'][1]:.2f} | "
            f"{r['verified'][0]:.2f} / {r['verified'][1]:.2f} | "
            + " | ".join(cells)
            + f" | {100 * r['not_found_of_right']:.0f} % | {t['verify_walk_median']}, "
            f"{t['verify_cold_median']} ({t['verify_walk_cpu_median']}, "
            f"{t['verify_cold_cpu_median']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairings", nargs="+", default=list(_gardens.PAIRINGS))
    ap.add_argument("--features", help="VerifyConfig.features (default: the default's)")
    ap.add_argument("--model", help="a checkpoint to index the day library with")
    ap.add_argument("--frames", help="only the night photos of places A-B, e.g. 150-199")
    ap.add_argument("--label", default="", help="the model's name in the table")
    ap.add_argument("--cold", type=int, default=10, help="photos timed with a cold cache")
    ap.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--store",
        choices=("keep", "empty", "off"),
        default="keep",
        help="the references' features on disk: as an earlier run left them, emptied first, "
        "or not used",
    )
    ap.add_argument("--out", type=Path, help="write the JSON here")
    args = ap.parse_args()
    if not _gardens.available():
        raise SystemExit(f"gardens_point not found in {_gardens.GARDENS}")
    from netvlad_gui.core.config import LocateConfig, VerifyConfig
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    verify = VerifyConfig.for_features(args.features) if args.features else VerifyConfig()
    if args.store == "off":
        verify = replace(verify, disk_cache_mb=0)
    cfg = LocateConfig(verify=replace(verify, enabled=True)).validate()
    results: dict = {"machine": machine(), "verify": repr(cfg.verify), "verdict": repr(cfg.verdict)}
    rows = []
    for day in args.pairings:
        rows.append(
            evaluate(
                day,
                cfg,
                model=args.model,
                frames=_frames(args.frames),
                cold=args.cold,
                empty_store=args.store == "empty",
            )
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_photo"}), flush=True)
    results["pairings"] = rows
    if args.controls:
        results["controls"] = controls(cfg)
        print(json.dumps(results["controls"]), flush=True)
    results["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(table(rows, args.label))
    if args.out:
        args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
