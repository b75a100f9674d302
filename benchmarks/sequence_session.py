"""Sequences as a user gets them: night photos located together by the session, with verification.

    python benchmarks/sequence_session.py                       # both pairings, n = 1/5/10/20
    python benchmarks/sequence_session.py --pairings day_left --groups 10 --set inlier_weight=0.65

What ``netvlad locate NIGHT_FOLDER --index DAY --sequence`` does, photo by photo: the real
``LocateSession.run`` (default LocateConfig: patch verification of the first 10 candidates,
then the sequence stage, SequenceConfig's defaults or ``--set``), on gardens_point places
100-199 (../shared/data/gardens_point): the 100 night_right photos against each day walk as a
library with synthetic GPS (frame i at 3*i m, _gardens.py), ground truth +-2 frames. The photos
are cut into consecutive groups of n, each group located on its own (n = 1: each photo alone,
``sequence=None``: the baseline, same session).

Per pairing and n: Recall@1 of each photo's final answer (match #1), how many the track decided,
the verdicts split by whether match #1 is right, and wall and CPU seconds per photo (the
references' patch features from memory: an untimed pass over the photos comes first).
Controls: the same photos in 3 shuffled orders (groups of 10, capture times in that order) must
come out exactly as alone, and photos of far-away places (../shared/data/exif/gps_photos, one
group) must stay ``not_found``; the shuffled groups in file order (a sparse sub-walk) are
measured beside them. Peak RSS of this process at the end.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _gardens
from _common import cpu_flags, cpu_model
from _real import SHARED

GROUPS = (1, 5, 10, 20)
SHUFFLES = 3


def _override(cfg, pairs: list[str]):
    """``cfg`` with ``key=value`` settings (numbers) replaced, validated."""
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        kind = type(getattr(cfg, key))
        changes[key] = kind(float(value)) if kind in (int, float) else value
    return dataclasses.replace(cfg, **changes).validate()


def locate_groups(session, photos: list, n: int, seq) -> tuple[dict, float, float]:
    """{photo's path: final result} for consecutive groups of ``n`` (paths, or PhotoInputs
    that carry a time); wall and CPU seconds in all."""
    from netvlad_gui.core.config import LocateConfig

    out = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for lo in range(0, len(photos), n):
        group = photos[lo : lo + n]
        for i, res in session.run(group, LocateConfig(), sequence=seq if n > 1 else None):
            if res.final:
                out[getattr(group[i], "path", group[i])] = res
    return out, time.perf_counter() - t0, time.process_time() - c0


def _first(res) -> tuple:
    """What a user reads first: match #1's file and the verdict."""
    return (res.matches[0].path if res.matches else None, res.verdict)


def judge(results: dict, pairing) -> dict:
    """Recall@1, decided, and verdicts split by whether match #1 is right."""
    right = 0
    verdicts: collections.Counter = collections.Counter()
    for k, q in enumerate(pairing.queries):
        res = results[q]
        ok = bool(res.matches) and Path(res.matches[0].path).name in pairing.positives[k]
        right += ok
        verdicts[f"{res.verdict}/{'right' if ok else 'wrong'}"] += 1
    return {
        "recall@1": round(right / len(pairing.queries), 3),
        "decided": sum(1 for r in results.values() if r.sequence is not None),
        "verdicts": dict(sorted(verdicts.items())),
    }


def measure(day: str, groups: list[int], seq, rows: list[dict]) -> None:
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.query.session import open_session

    pairing = _gardens.pairing(day)
    index = _gardens.index(day)  # built once, cached
    index_dir = index.dir
    index.close()
    _, session = open_session(index_dir, ExtractConfig())
    try:
        # Untimed first pass: the model's graph, the references' features in the store and in
        # memory, as for every later run; its answers are the "alone" baseline of the controls.
        alone = locate_groups(session, pairing.queries, 1, seq)[0]
        for n in groups:
            results, wall, cpu = locate_groups(session, pairing.queries, n, seq)
            row = {"pairing": pairing.name, "group": n, **judge(results, pairing)}
            row["s_per_photo"] = round(wall / len(results), 3)
            row["cpu_s_per_photo"] = round(cpu / len(results), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
        from netvlad_gui.core.photos.images import PhotoInput

        for seed in range(SHUFFLES):
            order = np.random.default_rng(seed).permutation(len(pairing.queries))
            shuffled = [pairing.queries[int(k)] for k in order]
            # Shuffled: capture times 1 s apart in the shuffled order, which the session
            # follows. Sparse walk: the same groups of 10 in file order (what a folder of
            # photos without times gets): 10 random places of the walk in walk order, 3-90 m
            # apart, a real sub-walk the track may follow, measured but not a control.
            timed = [PhotoInput(p, time_s=float(k)) for k, p in enumerate(shuffled)]
            for kind, photos in (("shuffled", timed), ("sparse walk", shuffled)):
                results, _, _ = locate_groups(session, photos, 10, seq)
                same = sum(_first(results[q]) == _first(alone[q]) for q in pairing.queries)
                row = {
                    "pairing": pairing.name,
                    "group": 10,
                    "control": f"{kind} (seed {seed})",
                    **judge(results, pairing),
                    "alone_recall@1": judge(alone, pairing)["recall@1"],
                    "same_as_alone": same,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        far = sorted(
            p
            for p in (SHARED / "data/exif/gps_photos").rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg")
        )
        if far:
            results, _, _ = locate_groups(session, far, len(far), seq)
            row = {
                "pairing": pairing.name,
                "control": f"{len(far)} far-away photos as one group",
                "verdicts": dict(collections.Counter(r.verdict for r in results.values())),
                "decided": sum(1 for r in results.values() if r.sequence is not None),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        session.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairings", nargs="*", default=list(_gardens.PAIRINGS))
    ap.add_argument("--groups", nargs="*", type=int, default=list(GROUPS))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="SequenceConfig")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not _gardens.available():
        raise SystemExit(f"gardens_point not found under {SHARED}")
    from netvlad_gui.core.config import SequenceConfig

    seq = _override(SequenceConfig(), args.set)
    head = {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": cpu_flags()}
    head["load_avg_1min_at_start"] = round(os.getloadavg()[0], 2)
    rows: list[dict] = [{**head, "sequence_config": dataclasses.asdict(seq)}]
    print(json.dumps(rows[0]), flush=True)
    for day in args.pairings:
        measure(day, args.groups, seq, rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append({"peak_rss_mb": round(peak_mb), "load_avg_1min_at_end": os.getloadavg()[0]})
    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
