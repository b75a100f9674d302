"""Which engine should run a job: ONNX Runtime fp32 vs torch bf16 vs torch fp32, per backbone.

    python benchmarks/runtime_auto.py                              # every backbone, 3 rounds
    python benchmarks/runtime_auto.py --backbones mobilenet_v2 vgg16 --rounds 5

The rules of ``--runtime auto`` (``core/model/runtime.py``: ``choose_engine``,
``BF16_PAYS_FROM``) come from these figures. For each backbone, in one process so that the three
share the machine's load, rounds interleaved:

- warm images/s through the app's own ``InferenceModel``s (``OrtModel``: the cached pixel graph
  + the numpy head; ``TorchModel``: folded BN, channels-last, fp32 or bf16 autocast), a batch of
  real photos at 640x480 (``--batch``; 2 for VGG16, whose fp32 pass takes seconds);
- descriptors of each against torch fp32 (cosine; bf16 is what an index must not mix);
- cold start, in fresh subprocesses: torch (``import torch`` + ``torchvision`` with the collector
  paused, as ``load_engine`` does) vs ONNX Runtime (``import onnxruntime`` + the session).

Then the break-even job length: from how many photos torch bf16 (its start-up included) finishes
sooner than ONNX Runtime fp32, ``start_torch - start_ort`` over the per-photo saving (none when
ONNX Runtime is faster warm). MobileNetV2 uses its shipped weights; the others random weights
(the same arithmetic). Say the load average: on a shared machine only the ratios mean much.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine

BATCH = {"vgg16": 2, "resnet50": 4, "resnet18": 4, "alexnet": 8, "mobilenet_v2": 8}

COLD_TORCH = r"""
import gc, time, sys
t = time.perf_counter()
from netvlad_gui.core.model.engine import load_engine
load_engine()
print(time.perf_counter() - t)
"""
COLD_ORT = r"""
import time, sys
t = time.perf_counter()
from netvlad_gui.core.model.ortmodel import make_session
make_session(sys.argv[1])
print(time.perf_counter() - t)
"""


def pixels(n: int) -> np.ndarray:
    """(n, 480, 640, 3) uint8: real photos (lund, Berlin) decoded as the app does, landscape."""
    from extract import photos

    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.photos.decoding import decode

    out = []
    for p in photos(4 * n):
        px, _ = decode(p, ExtractConfig())
        if px is not None and px.shape == (480, 640, 3):
            out.append(px)
        if len(out) == n:
            break
    return np.stack(out)


def engines(backbone: str, tmp: Path):
    """The same initialised model as OrtModel, TorchModel fp32 and TorchModel bf16."""
    import torch

    from netvlad_gui.core.config import ExtractConfig, InitConfig, ModelConfig
    from netvlad_gui.core.model.checkpoint import save_checkpoint
    from netvlad_gui.core.model.features import TorchModel
    from netvlad_gui.core.model.graphs import ort_model
    from netvlad_gui.core.model.head import sample_from_feature_maps
    from netvlad_gui.core.model.network import build_model
    from netvlad_gui.core.model.ortmodel import ModelFile

    torch.manual_seed(0)
    weights = None if backbone == "mobilenet_v2" else "none"
    model = build_model(ModelConfig.from_name(f"{backbone}-netvlad"), weights, progress=False)
    t32 = TorchModel(model, ExtractConfig(device="cpu", precision="fp32", runtime="torch"))
    maps = t32.maps_of(pixels(2))
    samples = sample_from_feature_maps(maps, 1000, 0, model.local_dim)
    t32.init_netvlad(samples, InitConfig(kmeans_iters=10))
    path = tmp / f"{backbone}.pt"
    save_checkpoint(model, path)
    t0 = time.perf_counter()
    ort = ort_model(ModelFile.read(path), torch_model=model)
    export_s = time.perf_counter() - t0
    bf16 = TorchModel(model, ExtractConfig(device="cpu", precision="bf16", runtime="torch"))
    t32 = TorchModel(model, ExtractConfig(device="cpu", precision="fp32", runtime="torch"))
    return {"ort_fp32": ort, "torch_bf16": bf16, "torch_fp32": t32}, export_s


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cold(code: str, *args: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def one_backbone(backbone: str, args, tmp: Path) -> dict:
    nets, export_s = engines(backbone, tmp)
    batch = pixels(args.batch or BATCH.get(backbone, 4))
    out = {k: net.describe_pixels(batch)[0] for k, net in nets.items()}  # warm-up
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.rounds):
        for k, net in nets.items():
            t = time.perf_counter()
            net.describe_pixels(batch)
            times[k].append(time.perf_counter() - t)
    rate = {k: len(batch) / statistics.median(v) for k, v in times.items()}
    graph = str(nets["ort_fp32"].graph)
    start_torch = cold(COLD_TORCH, rounds=args.cold)
    start_ort = cold(COLD_ORT, graph, rounds=args.cold)
    saving = 1 / rate["ort_fp32"] - 1 / rate["torch_bf16"]  # s per photo bf16 saves
    pays_from = math.ceil((start_torch - start_ort) / saving) if saving > 0 else None
    row = {
        "backbone": backbone,
        "batch": len(batch),
        "images_per_s": {k: round(v, 2) for k, v in rate.items()},
        "ort_vs_torch_fp32": round(rate["ort_fp32"] / rate["torch_fp32"], 2),
        "torch_bf16_vs_ort": round(rate["torch_bf16"] / rate["ort_fp32"], 2),
        "cosine_to_torch_fp32_min": {
            k: round(float(cosines(v, out["torch_fp32"]).min()), 6) for k, v in out.items()
        },
        "cold_start_s": {"torch": round(start_torch, 2), "onnxruntime": round(start_ort, 2)},
        "export_s": round(export_s, 1),
        "bf16_pays_from_photos": pays_from,
        "load": os.getloadavg(),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--backbones", nargs="+", default=["mobilenet_v2", "alexnet", "resnet18", "vgg16"]
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", type=int, default=3, help="fresh processes per cold start")
    ap.add_argument("--batch", type=int, help="photos per batch (default: per backbone)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # graphs of this run's own
        rows = [one_backbone(b, args, Path(tmp)) for b in args.backbones]
    print()
    print(
        f"{'backbone':14} {'ORT fp32':>9} {'torch bf16':>10} {'torch fp32':>10} "
        f"{'ORT/fp32':>8} {'bf16/ORT':>8} {'bf16 cos':>9} {'bf16 pays from':>14}"
    )
    for r in rows:
        ips, cos = r["images_per_s"], r["cosine_to_torch_fp32_min"]
        print(
            f"{r['backbone']:14} {ips['ort_fp32']:>9} {ips['torch_bf16']:>10} "
            f"{ips['torch_fp32']:>10} {r['ort_vs_torch_fp32']:>8} {r['torch_bf16_vs_ort']:>8} "
            f"{cos['torch_bf16']:>9} {r['bf16_pays_from_photos']!s:>14}"
        )
    result = {"benchmark": "runtime_auto", "rows": rows, "machine": info}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
