"""Geometric verification under appearance change: a severity sweep, queries changed only.

    python benchmarks/verify_appearance.py                        # sift, corridor + lund, 5 levels
    python benchmarks/verify_appearance.py --sets lund lund_view lund_loo lund_loo_view
    python benchmarks/verify_appearance.py --sets lund lund_view --features sift patch
    python benchmarks/verify_appearance.py --levels 0 1 --sift-contrast none   # before the fix

The shared data has no day/night pairs, so the queries of corridor and lund are changed the
way an evening photo differs from a day one, at severity s in [0, 1], against their unchanged
libraries: exposure x (1 - 0.6 s), gamma 1 + 0.8 s (crushed shadows), a blue cast, Gaussian
sensor noise (sigma 0.02 s of full scale) and a Gaussian blur of radius s px, in the query's own
pixels. s = 1 is ``verify.py``'s ``corridor_dusk`` set exactly (same seed). ``lund_view`` adds a
viewpoint change before the light change: the query rotated 4 degrees and zoomed 1.25x
off-centre (a crop to 80 %), as a step sideways and a tilted hand would. ``lund_loo``: all 24
lund photos in one library, each (changed) photo a query whose own original is left out of its
hits, positives the others within 25 m: 24 street queries instead of 5 (recall only).

Per set and level: Recall@1/5 of the global ranking and after verifying the top K (default
rule, ``verify.rerank``), the median inliers of correct and wrong candidates among the top K,
and for lund the verdicts (located within 25 m / uncertain / not_found). Nothing here is tuned
to the synthetic change: the levels are fixed above, the verifier runs with its defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from _real import CACHE, RECALL_M, SHARED
from verify import _index, _recall, _sets

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
TINT = (0.8, 0.95, 1.25)  # RGB gains at s = 1: evening light and a camera's auto white balance
VIEW_DEG, VIEW_CROP = 4.0, 0.8


def changed(photo: Path, s: float, view: bool = False) -> Path:
    """``photo`` as seen at severity ``s`` (and, with ``view``, from a slightly other pose), cached.

    s = 0 without ``view`` is the photo itself.
    """
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    if s == 0 and not view:
        return photo
    tag = f"{'view_' if view else ''}s{s:g}"
    out = CACHE / "appearance" / tag / photo.parent.parent.name / photo.name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    if view:
        w, h = img.size
        img = img.rotate(VIEW_DEG, Image.Resampling.BICUBIC)
        cw, ch = round(w * VIEW_CROP), round(h * VIEW_CROP)
        x0, y0 = round((w - cw) * 0.75), round((h - ch) * 0.4)  # off-centre: a step aside
        img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    if s > 0:
        rng = np.random.default_rng(int(photo.stem) if photo.stem.isdigit() else 0)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        tint = 1.0 + s * (np.array(TINT, dtype=np.float32) - 1.0)
        arr = (1.0 - 0.6 * s) * arr ** (1.0 + 0.8 * s) * tint
        arr = np.clip(arr + rng.normal(0.0, 0.02 * s, arr.shape), 0.0, 1.0)
        img = Image.fromarray((arr * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(s))
    img.save(out, quality=90)
    return out


def _lund_all() -> tuple[Path, list[Path], list[set[str]]]:
    """All 24 lund photos as one library (links, cached) and each as a query whose positives
    are the others within 25 m: 24 street queries instead of 5, each with 1-8 positives."""
    from netvlad_gui.core.photos import geo

    photos = sorted((SHARED / "data/lund_street").glob("*/*.jpg"))
    lib = CACHE / "lund_all_library"
    lib.mkdir(parents=True, exist_ok=True)
    for p in photos:
        if not (lib / p.name).exists():
            (lib / p.name).symlink_to(p)
    pts = {p.name: geo.read_gps(p).point for p in photos}
    pos = [
        {
            m
            for m, o in pts.items()
            if m != p.name
            and geo.haversine_m(pts[p.name].lat, pts[p.name].lon, o.lat, o.lon) <= RECALL_M
        }
        for p in photos
    ]
    return lib, photos, pos


def run_set(
    loc, index, queries, positives, k: int, originals: list[Path] | None, exclude_self: bool
) -> dict:
    """Recall, inliers and (``originals``: the unchanged photos, whose GPS is the truth)
    verdicts of ``queries``; the changed copies carry no EXIF. ``exclude_self``: the library
    holds each query's unchanged original, which is left out of its hits (leave-one-out)."""
    from netvlad_gui.core.photos import geo
    from netvlad_gui.core.query.session import LocateSession
    from netvlad_gui.core.query.verify import rerank

    vcfg = loc.cfg.verify
    feats = vcfg.features
    glob, ver, pure, inl_true, inl_false, verdicts, per_query = [], [], [], [], [], [], []
    for j, (q, pos) in enumerate(zip(queries, positives, strict=True)):
        described = loc.describe(q, with_map=feats == "patch")
        hits = loc.search(described.descriptor, max(k, 5) + exclude_self)
        if exclude_self:
            hits = [h for h in hits if h.path.name != q.name][: max(k, 5)]
        names = [h.path.name for h in hits]
        glob.append(names)
        checks = loc.verify(described, hits, vcfg)
        inl = [c.inliers if c is not None else None for c in checks]
        for n_, i in zip(names, inl, strict=False):
            (inl_true if n_ in pos else inl_false).append(i or 0)
        order = rerank([h.score for h in hits[:k]], inl[:k], vcfg.min_inliers, vcfg.keep_ratio)
        ver.append([names[i] for i in order + list(range(k, len(hits)))])
        per_query.append(
            {
                "score": [round(h.score, 4) for h in hits[:k]],
                "inliers": inl[:k],
                "correct": [n_ in pos for n_ in names[:k]],
            }
        )
        # diagnostic, not a rule: is there any local signal under the min_inliers floor?
        raw = rerank([h.score for h in hits[:k]], inl[:k], 0, 1.0)
        pure.append([names[i] for i in raw + list(range(k, len(hits)))])
        if originals is not None:
            r = LocateSession(loc).locate(q)
            t = geo.read_gps(originals[j]).point
            err = None if r.lat is None else geo.haversine_m(t.lat, t.lon, r.lat, r.lon)
            verdicts.append((r.verdict, err))
    rec = {
        "queries": len(queries),
        "global": [round(_recall(glob, positives, n), 3) for n in (1, 5)],
        f"verified_K{k}": [round(_recall(ver, positives, n), 3) for n in (1, 5)],
        "pure_inlier_order_no_floor": [round(_recall(pure, positives, n), 3) for n in (1, 5)],
        "inliers_median_correct": statistics.median(inl_true) if inl_true else None,
        "inliers_median_wrong": statistics.median(inl_false) if inl_false else None,
        "inliers_max_wrong": max(inl_false) if inl_false else None,
    }
    rec["per_query_top_k"] = per_query  # for trying other re-ranking rules offline
    if originals is not None:
        rec["verdicts"] = {
            "located_25m": sum(
                v == "located" and e is not None and e <= RECALL_M for v, e in verdicts
            ),
            "located_far": sum(v == "located" and (e is None or e > RECALL_M) for v, e in verdicts),
            "uncertain": sum(v == "uncertain" for v, _ in verdicts),
            "not_found": sum(v == "not_found" for v, _ in verdicts),
        }
    return rec


def run(
    features: str,
    sets: list[str],
    levels: list[float],
    k: int,
    contrast: str | None,
) -> dict:
    from dataclasses import replace

    from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
    from netvlad_gui.core.query.locate import Locator

    vcfg = VerifyConfig.for_features(features, top_k=k)
    if contrast is not None:
        vcfg = replace(vcfg, sift_contrast=contrast)

    base = _sets()
    if any(n.startswith("lund_loo") for n in sets):
        base["lund_loo"] = _lund_all()
    out: dict = {"features": features, "top_k": k, "verify_cfg": repr(vcfg), "sets": {}}
    for name in sets:
        view = name.endswith("_view")
        key = name.removesuffix("_view")
        library, queries, positives = base[key]
        index = _index(key.replace("_", ""), library, 640)
        loc = Locator(
            index,
            extract_cfg=ExtractConfig(image_size=640, device="cpu"),
            locate_cfg=LocateConfig(verify=vcfg),
        )
        for s in levels:
            qs = [changed(q, s, view=view) for q in queries]
            loo = key == "lund_loo"  # locate() would find the original: no verdicts
            lund = name.startswith("lund") and not loo
            rec = run_set(loc, index, qs, positives, k, queries if lund else None, loo)
            out["sets"][f"{name} s={s:g}"] = rec
            brief = {k_: v for k_, v in rec.items() if k_ != "per_query_top_k"}
            print(f"{features} {name} s={s:g}: {json.dumps(brief)}", flush=True)
    return out


def table(res: dict) -> str:
    k = res["top_k"]
    lines = [
        (
            f"| features | set, severity | global R@1 / R@5 | verified K={k} R@1 / R@5 | "
            "pure inlier order, no floor | "
            "inliers median correct / wrong (max wrong) | lund verdicts |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res["sets"].items():
        g, v, p = r["global"], r[f"verified_K{k}"], r["pure_inlier_order_no_floor"]
        vd = r.get("verdicts")
        vd = (
            f"{vd['located_25m']} located / {vd['uncertain']} uncertain / {vd['not_found']} "
            f"not_found" + (f" / {vd['located_far']} located > 25 m" if vd["located_far"] else "")
            if vd
            else ""
        )
        lines.append(
            f"| {res['features']} | {name} | {g[0]:.3f} / {g[1]:.3f} | {v[0]:.3f} / {v[1]:.3f} | "
            f"{p[0]:.3f} / {p[1]:.3f} | "
            f"{r['inliers_median_correct']} / {r['inliers_median_wrong']} "
            f"({r['inliers_max_wrong']}) | {vd} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", nargs="+", default=["sift"])
    ap.add_argument(
        "--sets", nargs="+", default=["corridor", "lund"], help="corridor lund lund_loo (+ _view)"
    )
    ap.add_argument("--levels", nargs="+", type=float, default=list(LEVELS))
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--sift-contrast", default=None, help="override VerifyConfig.sift_contrast")
    args = ap.parse_args()
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    results = {"machine": machine(), "runs": []}
    for feats in args.features:
        res = run(feats, args.sets, args.levels, args.top_k, args.sift_contrast)
        results["runs"].append(res)
        print(table(res), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
