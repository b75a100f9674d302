"""Extraction throughput on a CUDA GPU with the core pipeline: fp32 vs bf16 autocast.

    python benchmarks/gpu_throughput.py [--photos DIR] [--images 480] [--workers 12]

Photos: ``DIR`` (default ../shared/data/lund_street, 1024x768 JPEGs) repeated to ``--images``.
MobileNetV2-NetVLAD (shipped weights) and VGG16-NetVLAD (random weights: same FLOPs), NetVLAD
initialised from the photos. Each setting is warmed up first (cuDNN's kernel choice, workers);
the fp32 row is the baseline of the bf16 one, in the same process. Needs a GPU: CPU figures come
from ``extract.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _real import SHARED


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=SHARED / "data/lund_street")
    ap.add_argument("--images", type=int, default=480)
    ap.add_argument("--workers", type=int, default=12, help="decoding threads")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    import torch

    from netvlad_gui.core.config import ExtractConfig, InitConfig
    from netvlad_gui.core.model.features import extract
    from netvlad_gui.core.model.network import init_netvlad, sample_local_descriptors
    from netvlad_gui.core.model.resolve import resolve_model
    from netvlad_gui.core.photos.images import load_tensor

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: see extract.py for CPU throughput")
    photos = sorted(args.photos.rglob("*.jpg"))
    paths = [photos[i % len(photos)] for i in range(args.images)]
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(json.dumps({"machine": info, "images": len(paths)}), flush=True)
    rows = []
    for name, weights in (("mobilenet_v2-netvlad", None), ("vgg16-netvlad", "none")):
        torch.manual_seed(0)
        model = resolve_model(name, weights)
        if not model.is_initialised:
            imgs = (load_tensor(p, 640).unsqueeze(0) for p in photos[::2])
            samples = sample_local_descriptors(model, imgs, 100, 0)
            init_netvlad(model, samples, InitConfig(num_images=len(photos[::2])))
        model = model.cuda()
        base = None
        for label, switches in (("fp32", {}), ("bf16 autocast", {"bf16": True})):
            cfg = ExtractConfig(
                device="cuda", batch_size=args.batch, num_workers=args.workers, **switches
            )
            list(extract(model, paths[:64], cfg))  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            n = sum(1 for e in extract(model, paths, cfg) if e.descriptor is not None)
            torch.cuda.synchronize()
            ips = n / (time.perf_counter() - t)
            base = base or ips
            row = {
                "model": name,
                "precision": label,
                "images": n,
                "images_per_s": round(ips, 1),
                "x_fp32": round(ips / base, 2),
                "workers": args.workers,
                "batch": args.batch,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"benchmark": "gpu_throughput", "machine": info, "rows": rows}))


if __name__ == "__main__":
    main()
