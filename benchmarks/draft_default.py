"""Draft JPEG decoding on by default (issue 14): which shared photos it touches, and how much.

    python benchmarks/draft_default.py [--model-file index/model.pt]

Draft decoding only acts on JPEGs at least twice the model input in both sides. For the shared
Recall@1 sets (corridor 160x120, lund 1024x768 at the default 640) this counts the photos it
would touch: none, so their descriptors, and Recall@1, are the same bit for bit. The photos it
does touch are the 8 MP Berlin ones: for those it times the decode and gives the cosine of the
draft descriptor to the full-decode one, with a real model (a library's model.pt, else the
default model initialised on these photos).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from extract import big_photos

SHARED = HERE.parents[1] / "shared"


def touched(paths: list[Path], image_size: int) -> int:
    n = 0
    for p in paths:
        with Image.open(p) as img:
            n += img.format in ("JPEG", "MPO") and max(img.size) >= 2 * image_size
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-file", type=Path)
    ap.add_argument("--image-size", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.checkpoint import load_checkpoint
    from netvlad_gui.core.model.features import extract
    from netvlad_gui.core.photos.images import load_image

    data = SHARED / "data"
    sets = {
        "corridor": sorted((data / "corridor").rglob("*.jpg")),
        "lund": sorted((data / "lund_street").rglob("*.jpg")),
    }
    out: dict = {"machine": machine(), "image_size": args.image_size}
    out["touched"] = {k: [touched(v, args.image_size), len(v)] for k, v in sets.items()}
    big = big_photos()
    times = {}
    for draft in (False, True):
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for p in big:
                load_image(p, args.image_size, draft=draft)
        times[draft] = (time.perf_counter() - t0) / (args.repeats * len(big))
    out["decode_ms_full"] = round(times[False] * 1000, 1)
    out["decode_ms_draft"] = round(times[True] * 1000, 1)
    out["decode_speedup"] = round(times[False] / times[True], 2)
    if args.model_file:
        model = load_checkpoint(args.model_file)
        desc = {}
        for draft in (False, True):
            cfg = ExtractConfig(image_size=args.image_size, device="cpu", jpeg_draft=draft)
            got = {e.index: e.descriptor for e in extract(model, big, cfg)}
            desc[draft] = np.stack([got[i] for i in range(len(big))])
        cos = np.sum(desc[False] * desc[True], 1)
        out["cosine_draft_vs_full"] = [round(float(c), 4) for c in cos]
        out["model_file"] = str(args.model_file)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
