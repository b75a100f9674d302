"""Which local evidence finds the right place at night? A sweep of candidates on gardens_point.

    python benchmarks/night_evidence.py                       # every method, both pairings
    python benchmarks/night_evidence.py --methods sift_stretch patch_ms --controls

For each night photo of ../shared/data/gardens_point (places 100-199) the default model's
global search gives the top K = 10 of a day library (day_right, day_left). Every method below
describes each photo once (features cached in memory), matches the query with each of its 10
candidates and fits a homography (or a fundamental matrix) with USAC MAGSAC; per method:

- Recall@1/5 after re-ranking the top 10 by inliers (``verify.rerank``, keep_ratio 0.5, at
  several floors; "pure" = by inliers alone) against the global ranking;
- inliers of right (±2 frames) and wrong candidates, and of match #1 when it is right/wrong;
- time: describing one photo (median) and matching + fitting one pair (median), so one query
  at K = 10 costs about 11 descriptions (cold references) + 10 pairs; CPU seconds of this
  process (``time.process_time``, all its threads), which other processes' load disturbs less
  than wall time;
- ``--controls``: the same method on the far-away photos (Berlin, Portland: 5 photos against
  the lund library, must find nothing) and the lund queries (must find their street).

This is the measuring ground for ``core/query/verify.py``'s defaults (benchmarks/README.md,
"Night and day"); the methods here are sketches, the chosen one lives in core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _gardens
from _common import machine
from _real import RECALL_M, SHARED

K = 10
DENSE_MAP_S: list[float] = []  # decode + forward of one photo's feature map


@dataclass
class Feats:
    xy: np.ndarray  # (N, 2) in a 640 px frame
    desc: np.ndarray
    kind: str  # "l2" (float, L2 distance), "cos" (unit float), "hamming" (packed uint8)
    cell: float = 0.0  # quantisation of positions (patches): the fit's threshold floor
    scale: np.ndarray | None = None  # per-feature patch size (multi-scale patches)


# -- grey-level preparations --------------------------------------------------------------------
def stretch(g: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(g, (1.0, 99.0))
    if hi - lo < 1:
        return g
    return np.clip((g.astype(np.float32) - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)


def clahe(g: np.ndarray, clip: float = 3.0, tiles: int = 8) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(g)


def lcn(g: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Local contrast normalisation: (x - local mean) / local std, back to 0..255."""
    x = g.astype(np.float32)
    mu = cv2.GaussianBlur(x, (0, 0), sigma)
    sd = np.sqrt(cv2.GaussianBlur((x - mu) ** 2, (0, 0), sigma)) + 4.0
    y = (x - mu) / sd
    return np.clip(128 + 40 * y, 0, 255).astype(np.uint8)


PREP = {"none": lambda g: g, "stretch": stretch, "clahe": clahe, "lcn": lcn}


def grey(path: Path, size: int) -> np.ndarray:
    from netvlad_gui.core.photos.images import load_image

    img = load_image(path, size, 10**9, draft=True).convert("L")
    return np.asarray(img)


# -- classical detectors ------------------------------------------------------------------------
def classical(
    detector: str, prep: str, size: int, root: bool = False, nfeat: int = 1000
) -> Callable[[Path], Feats]:
    if detector == "sift":
        det = cv2.SIFT_create(nfeatures=nfeat)
    elif detector == "orb":
        det = cv2.ORB_create(nfeatures=nfeat * 2, fastThreshold=5)
    else:
        raise ValueError(detector)

    def describe(path: Path) -> Feats:
        g = PREP[prep](grey(path, size))
        kps, desc = det.detectAndCompute(g, None)
        if desc is None or not kps:
            return Feats(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32), "l2")
        xy = (np.array([k.pt for k in kps], np.float32) + 0.5) * (640.0 / max(g.shape))
        if detector == "sift":
            d = desc.astype(np.float32)
            if root:  # RootSIFT: L1-normalise, square root (Arandjelovic & Zisserman 2012)
                d = np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7))
            return Feats(xy, d, "l2")
        return Feats(xy, desc, "hamming")

    return describe


# -- the network's own dense features ------------------------------------------------------------
class Dense:
    """The backbone's feature map at 640 px, pooled over windows of several sizes."""

    def __init__(self, model, ecfg):
        from netvlad_gui.core.model.features import inference_model

        self.net = inference_model(model, ecfg)
        self.ecfg = ecfg
        self.maps: dict[tuple, torch.Tensor] = {}
        self.map_s = DENSE_MAP_S

    def map(self, path: Path, size: int = 640) -> torch.Tensor:
        key = (path, size)
        if key not in self.maps:
            from _real import CACHE

            from netvlad_gui.core.photos.images import load_image, to_tensor

            # kept on disk between runs: the same shipped backbone always gives the same map
            disk = CACHE / "night_evidence_maps" / f"{size}_{path.parent.name}_{path.stem}.pt"
            if disk.exists():
                self.maps[key] = torch.load(disk)
                return self.maps[key]
            t0 = time.process_time()
            img = load_image(path, size, 10**9, draft=True)
            x = to_tensor(img).unsqueeze(0)
            with torch.inference_mode():
                self.maps[key] = self.net.local_features(x)[0].float()
            self.map_s.append(time.process_time() - t0)
            disk.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.maps[key], disk)
        return self.maps[key]

    def patches(
        self, sizes: tuple[int, ...], stride: int = 1, vlad: bool = False, size: int = 640
    ) -> Callable[[Path], Feats]:
        pool = self.net.pool

        def describe(path: Path) -> Feats:
            m = self.map(path, size)
            d, h, w = m.shape
            cell = 640.0 / max(h, w)  # pixels per cell in the 640 px frame
            xs, ds, ss = [], [], []
            for s in sizes:
                if s > min(h, w):
                    continue
                if vlad:
                    desc, cy, cx = _patch_vlad(pool, m, s, stride)
                else:
                    x = torch.nn.functional.normalize(m[None], dim=1)
                    pooled = torch.nn.functional.avg_pool2d(x, s, stride)[0]  # (D, h', w')
                    hh, ww = pooled.shape[1:]
                    desc = torch.nn.functional.normalize(pooled.reshape(d, -1), dim=0).T
                    cy = np.arange(hh) * stride + s / 2.0
                    cx = np.arange(ww) * stride + s / 2.0
                gx, gy = np.meshgrid(cx * cell, cy * cell)
                xs.append(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
                ds.append(desc.numpy().astype(np.float32))
                ss.append(np.full(len(xs[-1]), s))
            return Feats(
                np.concatenate(xs), np.concatenate(ds), "cos", cell * stride, np.concatenate(ss)
            )

        return describe


def _patch_vlad(pool, m: torch.Tensor, s: int, stride: int):
    """NetVLAD of every s x s window of the map (Patch-NetVLAD's patch descriptors), by box sums
    of the soft-assigned residuals."""
    d, h, w = m.shape
    x = torch.nn.functional.normalize(m[None], dim=1)
    with torch.inference_mode():
        a = torch.softmax(pool.conv(x), dim=1)[0]  # (K, h, w)
        k = a.shape[0]
        ax = (a[:, None] * x[0][None]).reshape(k * d, h, w)  # (K*D, h, w)
        sa = torch.nn.functional.avg_pool2d(a[None], s, stride)[0] * s * s  # (K, h', w')
        sax = torch.nn.functional.avg_pool2d(ax[None], s, stride)[0] * s * s  # (K*D, h', w')
        hh, ww = sa.shape[1:]
        v = sax.reshape(k, d, -1) - sa.reshape(k, 1, -1) * pool.centroids[:, :, None]
        v = torch.nn.functional.normalize(v, dim=1).reshape(k * d, -1)
        v = torch.nn.functional.normalize(v, dim=0).T  # (P, K*D)
    cy = np.arange(hh) * stride + s / 2.0
    cx = np.arange(ww) * stride + s / 2.0
    return v.float(), cy, cx


# -- matching and fitting -----------------------------------------------------------------------
def mutual(q: Feats, r: Feats, ratio: float, same_scale: bool = True) -> tuple[np.ndarray, ...]:
    if len(q.xy) < 2 or len(r.xy) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    if q.kind == "hamming":
        dist = _hamming(q.desc, r.desc)
    elif q.kind == "cos":
        sim = q.desc @ r.desc.T
        if q.scale is not None and same_scale:
            sim = np.where(q.scale[:, None] == r.scale[None, :], sim, -2.0)
        dist = np.sqrt(np.clip(2 - 2 * sim, 0, None))
    else:
        a, b = q.desc, r.desc
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        dist = np.sqrt(np.clip(d2, 0, None))
    from netvlad_gui.core.query.verify import _ratio_mutual  # the verifier's own rule

    return _ratio_mutual(dist, ratio)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ua = np.unpackbits(a, axis=1).astype(np.float32)
    ub = np.unpackbits(b, axis=1).astype(np.float32)
    return ua.sum(1)[:, None] + ub.sum(1)[None] - 2 * ua @ ub.T


def plausible(model: np.ndarray, q: Feats) -> bool:
    """A homography a camera could give between two photos of a street: orientation kept, area
    changed by at most 4x, little perspective (chance fits of unrelated photos are often wild)."""
    h = model / model[2, 2] if abs(model[2, 2]) > 1e-12 else model
    det = float(np.linalg.det(h[:2, :2]))
    persp = float(np.abs(h[2, :2]).max()) * 640.0  # perspective change across the frame
    return 0.25 <= det <= 4.0 and persp <= 0.5


def fit(
    q: Feats, r: Feats, qi, ri, geometry: str, px: float, check: bool = False
) -> tuple[int, int]:
    n = len(qi)
    need = 4 if geometry == "homography" else 8
    if n < need:
        return 0, n
    thr = px if px < 0 else max(px, r.cell)
    thr = abs(thr)
    src = q.xy[qi].reshape(-1, 1, 2)
    dst = r.xy[ri].reshape(-1, 1, 2)
    try:
        if geometry == "homography":
            model, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, thr, None, 10000, 0.999)
        else:
            model, mask = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, thr, 0.999, 10000)
    except cv2.error:
        return 0, n
    if model is None or mask is None:
        return 0, n
    if check and geometry == "homography" and not plausible(model, q):
        return 0, n
    return int(mask.sum()), n


@dataclass
class Method:
    name: str
    describe: Callable[[Path], Feats]
    ratio: float
    geometry: str = "homography"
    px: float = 3.0  # at 640 px; patches: at least a cell, unless negative (then exactly -px)
    check: bool = False  # refuse implausible homographies (see ``plausible``)


def methods(model, ecfg, which: list[str] | None) -> list[Method]:
    dense = Dense(model, ecfg)
    all_ = [
        Method("sift_stretch", classical("sift", "stretch", 320), 0.85),  # today's default
        Method("sift_stretch_F", classical("sift", "stretch", 320), 0.85, "fundamental"),
        Method("sift_clahe", classical("sift", "clahe", 320), 0.85),
        Method("sift_lcn", classical("sift", "lcn", 320), 0.85),
        Method("rootsift_clahe", classical("sift", "clahe", 320, root=True), 0.85),
        Method("rootsift_clahe_r9", classical("sift", "clahe", 320, root=True), 0.9),
        Method("rootsift_clahe_640", classical("sift", "clahe", 640, root=True), 0.85),
        Method("orb_clahe", classical("orb", "clahe", 640), 0.85),
        Method("patch1", dense.patches((1,)), 1.0),  # the map's cells, mutual NN
        Method("patch1_r9", dense.patches((1,)), 0.9),
        Method("patch1_plaus", dense.patches((1,)), 1.0, check=True),
        Method("patch1_t8", dense.patches((1,)), 1.0, px=-8.0),
        Method("patch1_t12", dense.patches((1,)), 1.0, px=-12.0),
        Method("patch1_r98", dense.patches((1,)), 0.98),
        Method("patch1_F", dense.patches((1,)), 1.0, "fundamental"),
        Method("patch2", dense.patches((2,)), 1.0),
        Method("patch3", dense.patches((3,)), 1.0),
        Method("patch_ms", dense.patches((1, 2, 3)), 1.0),
        Method("patch_ms_F", dense.patches((1, 2, 3)), 1.0, "fundamental"),
        Method("patch_ms_r95", dense.patches((1, 2, 3)), 0.95),
        Method("patchvlad3", dense.patches((3,), vlad=True), 1.0),
        Method("patchvlad2_4", dense.patches((2, 4), vlad=True), 1.0),
        Method("patch1_960", dense.patches((1,), size=960), 1.0),
        Method("patch_ms_960", dense.patches((1, 2, 3), size=960), 1.0),
    ]
    if which:
        known = {m.name for m in all_}
        if unknown := set(which) - known:
            raise SystemExit(f"unknown methods {sorted(unknown)}; known {sorted(known)}")
        all_ = [m for m in all_ if m.name in which]
    return all_


# -- sets ---------------------------------------------------------------------------------------
@dataclass
class QuerySet:
    name: str
    queries: list[Path]
    cand: list[list[Path]]  # top-K candidates per query, global order
    scores: list[list[float]]
    right: list[list[bool]] | None  # per candidate: correct? (None: nothing is, far-away)


def _cached(name: str, make: Callable[[], list[QuerySet]]) -> list[QuerySet]:
    """The global top K of a set, computed once (the indexes are cached too)."""
    from _real import CACHE

    f = CACHE / f"night_evidence_{name}.json"
    if f.exists():
        raw = json.loads(f.read_text())
        return [
            QuerySet(
                r["name"],
                [Path(p) for p in r["queries"]],
                [[Path(p) for p in c] for c in r["cand"]],
                r["scores"],
                r["right"],
            )
            for r in raw
        ]
    sets = make()
    f.write_text(
        json.dumps(
            [
                {
                    "name": s.name,
                    "queries": [str(p) for p in s.queries],
                    "cand": [[str(p) for p in c] for c in s.cand],
                    "scores": s.scores,
                    "right": s.right,
                }
                for s in sets
            ]
        )
    )
    return sets


def gardens_sets(ecfg) -> list[QuerySet]:
    from netvlad_gui.core.query.locate import Locator

    out = []
    for day in _gardens.PAIRINGS:
        p = _gardens.pairing(day)
        idx = _gardens.index(day)
        loc = Locator(idx, extract_cfg=ecfg)
        cand, scores, right = [], [], []
        for q, pos in zip(p.queries, p.positives, strict=True):
            desc = loc.describe(q).descriptor
            hits = idx.search(desc[None], K)[0]
            cand.append([h.path for h in hits])
            scores.append([h.score for h in hits])
            right.append([h.path.name in pos for h in hits])
        out.append(QuerySet(p.name, p.queries, cand, scores, right))
    return out


def control_sets(ecfg) -> list[QuerySet]:
    from verify import _far_photos, _index

    from netvlad_gui.core.photos import geo
    from netvlad_gui.core.query.locate import Locator

    lund = SHARED / "data/lund_street"
    idx = _index("lund", lund / "references", 640)
    loc = Locator(idx, extract_cfg=ecfg)
    out = []
    for name, photos in (("far_away", _far_photos()), ("lund", sorted(lund.glob("queries/*")))):
        cand, scores, right = [], [], []
        for q in photos:
            desc = loc.describe(q).descriptor
            hits = idx.search(desc[None], K)[0]
            cand.append([h.path for h in hits])
            scores.append([h.score for h in hits])
            t = geo.read_gps(q).point
            right.append(
                [
                    t is not None
                    and name == "lund"
                    and geo.haversine_m(t.lat, t.lon, h.image.lat, h.image.lon) <= RECALL_M
                    for h in hits
                ]
            )
        out.append(QuerySet(name, photos, cand, scores, right))
    return out


def corridor_sets(ecfg) -> list[QuerySet]:
    """Corridor (111 indoor queries, ±2 frames): verification must not cost its daylight R@1."""
    from verify import _index, _sets

    from netvlad_gui.core.query.locate import Locator

    library, queries, positives = _sets()["corridor"]
    idx = _index("corridor", library, 640)
    loc = Locator(idx, extract_cfg=ecfg)
    cand, scores, right = [], [], []
    for q, pos in zip(queries, positives, strict=True):
        desc = loc.describe(q).descriptor
        hits = idx.search(desc[None], K)[0]
        cand.append([h.path for h in hits])
        scores.append([h.score for h in hits])
        right.append([h.path.name in pos for h in hits])
    return [QuerySet("corridor", queries, cand, scores, right)]


# -- running ------------------------------------------------------------------------------------
def run_method(m: Method, sets: list[QuerySet]) -> dict:
    from netvlad_gui.core.query.verify import rerank

    cache: dict[Path, Feats] = {}
    desc_s: list[float] = []

    def feats(p: Path) -> Feats:
        if p not in cache:
            t0 = time.process_time()
            cache[p] = m.describe(p)
            desc_s.append(time.process_time() - t0)
        return cache[p]

    out: dict = {"method": m.name, "sets": {}}
    pair_s: list[float] = []
    for s in sets:
        inl_all, mat_all = [], []
        for q, cands in zip(s.queries, s.cand, strict=True):
            fq = feats(q)
            row_i, row_m = [], []
            for c in cands:
                fr = feats(c)
                t0 = time.process_time()
                qi, ri = mutual(fq, fr, m.ratio)
                n_in, n_m = fit(fq, fr, qi, ri, m.geometry, m.px, m.check)
                pair_s.append(time.process_time() - t0)
                row_i.append(n_in)
                row_m.append(n_m)
            inl_all.append(row_i)
            mat_all.append(row_m)
        rec: dict = {"inliers": inl_all, "matches": mat_all}
        if s.right is not None and any(any(r) for r in s.right):
            right = s.right
            rec["global"] = _recalls([list(range(K))] * len(right), right)
            for floor in (0, 8, 15, 25, 40):
                orders = [rerank(sc, inl, floor, 0.5) for sc, inl in zip(s.scores, inl_all)]
                rec[f"rerank_floor{floor}"] = _recalls(orders, right)
            pure = [rerank(sc, inl, 0, 1.0) for sc, inl in zip(s.scores, inl_all)]
            rec["pure"] = _recalls(pure, right)
            ri = [i for row, rr in zip(inl_all, right) for i, r in zip(row, rr) if r]
            wi = [i for row, rr in zip(inl_all, right) for i, r in zip(row, rr) if not r]
            rec["inl_right"] = _dist(ri)
            rec["inl_wrong"] = _dist(wi)
            rec["top1_right"] = _dist([row[0] for row, rr in zip(inl_all, right) if rr[0]])
            rec["top1_wrong"] = _dist([row[0] for row, rr in zip(inl_all, right) if not rr[0]])
        rec["best_any"] = _dist([max(row) for row in inl_all])
        out["sets"][s.name] = rec
    out["describe_s"] = round(statistics.median(desc_s), 4) if desc_s else None
    out["pair_s"] = round(statistics.median(pair_s), 4) if pair_s else None
    if out["describe_s"] is not None:
        out["query_K10_cold_s"] = round(11 * out["describe_s"] + 10 * out["pair_s"], 3)
    return out


def _recalls(orders, right) -> list[float]:
    r1 = sum(rr[o[0]] for o, rr in zip(orders, right)) / len(right)
    r5 = sum(any(rr[i] for i in o[:5]) for o, rr in zip(orders, right)) / len(right)
    return [round(r1, 3), round(r5, 3)]


def _dist(v: list[int]) -> dict:
    if not v:
        return {}
    a = np.array(v)
    return {
        "n": len(a),
        "p10": int(np.percentile(a, 10)),
        "median": float(np.median(a)),
        "p90": int(np.percentile(a, 90)),
        "max": int(a.max()),
    }


def summary(res: dict) -> str:
    lines = []
    for name, r in res["sets"].items():
        if "global" in r:
            lines.append(
                f"{res['method']:20} {name:16} global {r['global']} "
                f"f0 {r['rerank_floor0']} f8 {r['rerank_floor8']} f15 {r['rerank_floor15']} "
                f"f25 {r['rerank_floor25']} pure {r['pure']} | right {r['inl_right'].get('median')}"
                f"/{r['inl_right'].get('p90')} wrong {r['inl_wrong'].get('median')}"
                f"/{r['inl_wrong'].get('p90')}/{r['inl_wrong'].get('max')} "
                f"top1 right p10 {r['top1_right'].get('p10')} med {r['top1_right'].get('median')}"
            )
        else:
            lines.append(f"{res['method']:20} {name:16} best inliers {r['best_any']}")
    lines.append(
        f"{res['method']:20} describe {res['describe_s']} s, pair {res['pair_s']} s, "
        f"K=10 cold ~{res.get('query_K10_cold_s')} s"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="*")
    ap.add_argument("--controls", action="store_true", help="also far-away and lund photos")
    ap.add_argument("--corridor", action="store_true", help="also corridor's daylight queries")
    ap.add_argument("--no-gardens", action="store_true", help="leave out the night queries")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.checkpoint import load_checkpoint
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    ecfg = ExtractConfig(device="cpu")  # as the app describes (bf16 where native)
    sets = [] if args.no_gardens else _cached("gardens", lambda: gardens_sets(ecfg))
    if args.corridor:
        sets += _cached("corridor", lambda: corridor_sets(ecfg))
    if args.controls:
        sets += _cached("controls", lambda: control_sets(ecfg))
    ecfg = ExtractConfig(device="cpu", precision="fp32")  # the verifier's maps are fp32
    model = load_checkpoint(_gardens.index("day_right").model_path)
    results = {"machine": machine(), "runs": []}
    for m in methods(model, ecfg, args.methods):
        res = run_method(m, sets)
        results["runs"].append(res)
        print(summary(res), flush=True)
        if args.out:  # after each method: a long sweep keeps what it measured
            args.out.write_text(json.dumps(results))
    if DENSE_MAP_S:
        results["dense_map_s"] = round(statistics.median(DENSE_MAP_S), 4)
        print(f"dense map (decode + forward at 640 px): {results['dense_map_s']} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
