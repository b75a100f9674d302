"""Why night photos of places in the library get "not in this library", and what the verdict
could do about it: every far-away photo of ../shared against every library, beside the night
photos of the gardens walk (issue 21).

    python benchmarks/night_verdicts.py                       # day_left, day_right, lund
    python benchmarks/night_verdicts.py --libraries day_left --night-inliers 12 16

For each library (gardens day_left / day_right as in daynight.py, and lund_street's
references), the real ``Locator`` describes, searches (K = 10) and verifies every photo once;
the evidence is cached (``CACHE/night_verdicts_<library>.pkl``) and the verdict is then built
by ``answer.build_answer`` (what a session does) under each ``VerifyConfig.night_inliers``
(None: off, the default). Photos:

- in the library: gardens night_right (100) against the day walks, ±2 frames = right #1;
  lund queries (5) against lund;
- far away: every image of ``exif/`` that decodes (Berlin, Portland, and the edge cases: small
  test images, grey and black ones), corridor (56 queries + 28 references), lund (24) against
  the gardens walks; exif, corridor, gardens night (50) and day (50) photos against lund.

Printed: the verdicts of the photos in the library (split by a right or wrong #1), and each
far-away photo that is not ``not_found`` with its inliers, similarity and light.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _gardens
from _real import CACHE, SHARED

IMAGES = {".jpg", ".jpeg", ".png"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGES)


def photo_sets(library: str) -> dict[str, list[Path]]:
    g = _gardens.GARDENS
    exif = _images(SHARED / "data/exif")
    corridor = (
        _images(SHARED / "data/corridor/query")[::2] + _images(SHARED / "data/corridor/ref")[1::4]
    )
    if library == "lund":
        return {
            "in": _images(SHARED / "data/lund_street/queries"),
            "far": exif
            + corridor
            + _images(g / "night_right")[::2]
            + _images(g / "day_right")[::4]
            + _images(g / "day_left")[1::4],
        }
    return {
        "in": _images(g / "night_right"),
        "far": exif + corridor + _images(SHARED / "data/lund_street"),
    }


def gather(library: str) -> dict:
    """The evidence of every photo against ``library`` (cached)."""
    cache = CACHE / f"night_verdicts_{library}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    from verify import _index

    from netvlad_gui.core.config import ExtractConfig, LocateConfig
    from netvlad_gui.core.photos.images import ImageLoadError
    from netvlad_gui.core.photos.light import measure_light
    from netvlad_gui.core.query.answer import Evidence
    from netvlad_gui.core.query.locate import Locator

    if library == "lund":
        index = _index("lund", SHARED / "data/lund_street/references", 640)
    else:
        index = _gardens.index(library)
    cfg = LocateConfig()
    loc = Locator(index, extract_cfg=ExtractConfig(device="cpu"), locate_cfg=cfg)
    out: dict = {"calibration": loc.calibration, "rows": []}
    for kind, paths in photo_sets(library).items():
        for q in paths:
            try:
                d = loc.describe(q, with_map=True)
            except (ImageLoadError, OSError) as exc:
                out["rows"].append({"kind": kind, "q": str(q), "error": str(exc)})
                continue
            hits = loc.search(d.descriptor, cfg.verify.top_k)
            ev = Evidence(str(q), hits, None, checks=loc.verify(d, hits, cfg.verify))
            ev.light = measure_light(d.image)
            out["rows"].append({"kind": kind, "q": str(q), "ev": ev})
    index.close()
    cache.write_bytes(pickle.dumps(out))
    return out


def _frame(path: str) -> int | None:
    stem = Path(path).stem
    return int(stem.removeprefix("Image")) if stem.startswith("Image") else None


def verdicts(library: str, data: dict, night_inliers: int | None) -> dict:
    from dataclasses import replace

    from netvlad_gui.core.config import LocateConfig, VerifyConfig
    from netvlad_gui.core.query.answer import build_answer
    from netvlad_gui.core.query.verdict import calibrated_similarity, light_change

    cfg = LocateConfig(verify=replace(VerifyConfig(), night_inliers=night_inliers)).validate()
    counts: collections.Counter = collections.Counter()
    far_not_nf = []
    far_total = collections.Counter()
    for row in data["rows"]:
        if "ev" not in row:
            continue
        ev, q = row["ev"], row["q"]
        res = build_answer(ev, data["calibration"], cfg, final=True)
        if row["kind"] == "in":
            if library == "lund":
                from netvlad_gui.core.photos import geo

                t = geo.read_gps(q).point  # the query's own EXIF GPS
                err = geo.haversine_m(res.lat, res.lon, t.lat, t.lon) if res.lat else None
                right = err is not None and err <= 25.0
            else:
                top = _frame(res.matches[0].path)
                right = top is not None and abs(top - _frame(q)) <= 2
            counts[res.verdict, right] += 1
            continue
        group = Path(q).relative_to(SHARED / "data").parts[0]
        far_total[group] += 1
        if res.verdict != "not_found":
            sim = calibrated_similarity(ev.hits[0].score, data["calibration"])
            far_not_nf.append(
                {
                    "photo": str(Path(q).relative_to(SHARED / "data")),
                    "verdict": res.verdict,
                    "inliers": res.best_inliers,
                    "similarity": None if sim is None else round(sim, 2),
                    "light": light_change(ev.light, cfg.verdict),
                }
            )
    right = sum(n for (_, r), n in counts.items() if r)
    return {
        "library": library,
        "night_inliers": night_inliers,
        "in_library": {
            f"{v} ({'right' if r else 'wrong'} #1)": n for (v, r), n in sorted(counts.items())
        },
        "not_found_of_right": f"{counts['not_found', True]}/{right}",
        "far_away_photos": dict(far_total),
        "far_away_not_not_found": far_not_nf,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libraries", nargs="+", default=["day_left", "day_right", "lund"])
    ap.add_argument("--night-inliers", nargs="+", default=["none", "12", "16", "17", "20"])
    args = ap.parse_args()
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    for library in args.libraries:
        data = gather(library)
        for ni in args.night_inliers:
            r = verdicts(library, data, None if ni == "none" else int(ni))
            print(
                f"{library} night_inliers={ni}: in library {r['in_library']}, not_found of "
                f"right #1 {r['not_found_of_right']}; far away {r['far_away_photos']}, not "
                f"not_found: {len(r['far_away_not_not_found'])}"
            )
            for f in r["far_away_not_not_found"]:
                print("    ", f)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
