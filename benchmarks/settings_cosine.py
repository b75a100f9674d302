"""How far each extraction setting moves a photo's descriptor: why an index records its image size.

    python benchmarks/settings_cosine.py --model IDX/model.pt

The same photos are described at the reference settings (fp32, 640 px, full decode) and with one
setting changed; the lowest cosine over the photos is printed per setting, next to the highest
cosine between two different photos (what separates places). Lund's references (1024 px) for the
image size and precision, the 8-12 MP photos of data/exif for JPEG draft decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a checkpoint (an index's model.pt)")
    ap.add_argument("--photos", type=int, default=8, help="lund references used")
    args = ap.parse_args()

    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.checkpoint import load_checkpoint
    from netvlad_gui.core.model.features import extract

    model = load_checkpoint(args.model).eval()
    lund = sorted((SHARED / "lund_street/references").glob("*.jpg"))[: args.photos]
    big = sorted(p for p in (SHARED / "exif/gps_photos").glob("*/*") if p.suffix.lower() == ".jpg")

    def desc(paths, **kw) -> np.ndarray:
        cfg = ExtractConfig(num_workers=0, device="cpu", **{"precision": "fp32", **kw})
        got = {e.index: e.descriptor for e in extract(model, paths, cfg)}
        return np.stack([got[i] for i in range(len(paths))])

    def worst(a, b) -> float:
        return float(np.sum(a * b, axis=1).min())

    ref = desc(lund)
    out = {f"image_size_{s}": worst(ref, desc(lund, image_size=s)) for s in (160, 320, 480, 800)}
    out["bf16"] = worst(ref, desc(lund, precision="bf16"))
    out["jpeg_draft_8mp"] = worst(desc(big, jpeg_draft=False), desc(big, jpeg_draft=True))
    out["two_different_photos_max"] = float((ref @ ref.T)[~np.eye(len(ref), dtype=bool)].max())
    for k, v in out.items():
        print(f"{k:28} {v:.4f}")
    print(json.dumps({"machine": machine(), "min_cosine": out}))


if __name__ == "__main__":
    main()
