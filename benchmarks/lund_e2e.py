"""End-to-end figures on ../shared/data/lund_street: index speed, locate latency, size, Recall@1.

    python benchmarks/lund_e2e.py [--model mobilenet_v2-netvlad] [--image-size 640]

Prints a table and one JSON line. Timings on a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from netvlad_gui.core.config import RECALL_RADIUS_M, ExtractConfig
from netvlad_gui.core.library.builder import build_index
from netvlad_gui.core.library.index import LibraryIndex
from netvlad_gui.core.model.runtime import tune_process
from netvlad_gui.core.photos import geo
from netvlad_gui.core.photos.images import list_images
from netvlad_gui.core.query.locate import Locator
from netvlad_gui.core.query.session import LocateSession

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--image-size", type=int, default=640)
    ap.add_argument("--data", type=Path, default=SHARED / "data/lund_street")
    args = ap.parse_args()
    tune_process()
    cfg = ExtractConfig(image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = build_index(
            args.data / "references", Path(tmp) / "idx", model_spec=args.model, extract_cfg=cfg
        )
        build_s = time.perf_counter() - t0
        index = LibraryIndex(Path(tmp) / "idx")
        t0 = time.perf_counter()
        loc = LocateSession(Locator(index, extract_cfg=cfg))
        load_s = time.perf_counter() - t0
        queries = list_images(args.data / "queries")
        loc.locate(queries[0])  # warm-up
        lat, r1, errs = [], 0, []
        for q in queries:
            t0 = time.perf_counter()
            r = loc.locate(q)
            lat.append(time.perf_counter() - t0)
            truth = geo.read_gps(q).point
            top = r.matches[0]
            r1 += geo.haversine_m(truth.lat, truth.lon, top.lat, top.lon) <= RECALL_RADIUS_M
            errs.append(r.error_m)
    figures = {
        "model": s.model,
        "images": s.indexed,
        "build_s": round(build_s, 2),
        "images_per_s_incl_init": round(s.indexed / build_s, 2),
        "bytes_per_image": round(s.bytes_per_image),
        "locator_load_s": round(load_s, 2),
        "locate_warm_median_s": round(statistics.median(lat), 3),
        "recall@1": r1 / len(queries),
        "median_error_m": round(statistics.median(errs), 1),
    }
    for k, v in figures.items():
        print(f"{k:26} {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
