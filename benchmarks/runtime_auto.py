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
ONNX Runtime is faster warm): from this run's wall clock, and "quiet" from CPU seconds (the
start-up's on one core, the network's spread over the cores), which a shared machine's load
does not inflate. MobileNetV2 uses its shipped weights; the others random weights
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
import time, sys
t, c = time.perf_counter(), time.process_time()
from netvlad_gui.core.model.engine import load_engine
load_engine()
print(time.perf_counter() - t, time.process_time() - c)
"""
COLD_ORT = r"""
import time, sys
t, c = time.perf_counter(), time.process_time()
from netvlad_gui.core.model.ortmodel import make_session
make_session(sys.argv[1])
print(time.perf_counter() - t, time.process_time() - c)
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


def cold(code: str, *args: str, rounds: int) -> tuple[float, float]:
    """Median (wall s, CPU s) of ``code`` in fresh processes."""
    wall, cpu = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        w, c = out.stdout.strip().splitlines()[-1].split()
        wall.append(float(w))
        cpu.append(float(c))
    return statistics.median(wall), statistics.median(cpu)


def one_backbone(backbone: str, args, tmp: Path) -> dict:
    nets, export_s = engines(backbone, tmp)
    batch = pixels(args.batch or BATCH.get(backbone, 4))
    out = {k: net.describe_pixels(batch)[0] for k, net in nets.items()}  # warm-up
    times: dict[str, list[float]] = {k: [] for k in nets}
    cpu: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.rounds):
        for k, net in nets.items():
            t, c = time.perf_counter(), time.process_time()
            net.describe_pixels(batch)
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    rate = {k: len(batch) / statistics.median(v) for k, v in times.items()}
    cpu_per_photo = {k: statistics.median(v) / len(batch) for k, v in cpu.items()}
    graph = str(nets["ort_fp32"].graph)
    start_torch, start_torch_cpu = cold(COLD_TORCH, rounds=args.cold)
    start_ort, start_ort_cpu = cold(COLD_ORT, graph, rounds=args.cold)

    def pays_from(extra: float, saving: float) -> int | None:
        return max(math.ceil(extra / saving), 1) if saving > 0 else None

    # wall: this run's clock, as loaded as it was; CPU: core-seconds, which a quiet machine
    # turns into wall time over its cores (the torch import runs on one core, the network on all)
    cores = os.cpu_count() or 1
    saving_cpu = (cpu_per_photo["ort_fp32"] - cpu_per_photo["torch_bf16"]) / cores
    row = {
        "backbone": backbone,
        "batch": len(batch),
        "images_per_s": {k: round(v, 2) for k, v in rate.items()},
        "cpu_s_per_photo": {k: round(v, 4) for k, v in cpu_per_photo.items()},
        "ort_vs_torch_fp32": round(rate["ort_fp32"] / rate["torch_fp32"], 2),
        "torch_bf16_vs_ort": round(rate["torch_bf16"] / rate["ort_fp32"], 2),
        "torch_bf16_vs_ort_cpu": round(cpu_per_photo["ort_fp32"] / cpu_per_photo["torch_bf16"], 2),
        "cosine_to_torch_fp32_min": {
            k: round(float(cosines(v, out["torch_fp32"]).min()), 6) for k, v in out.items()
        },
        "cold_start_s": {"torch": round(start_torch, 2), "onnxruntime": round(start_ort, 2)},
        "cold_start_cpu_s": {
            "torch": round(start_torch_cpu, 2),
            "onnxruntime": round(start_ort_cpu, 2),
        },
        "export_s": round(export_s, 1),
        "bf16_pays_from_photos": pays_from(
            start_torch - start_ort, 1 / rate["ort_fp32"] - 1 / rate["torch_bf16"]
        ),
        "bf16_pays_from_photos_quiet": pays_from(start_torch_cpu - start_ort_cpu, saving_cpu),
        "load": os.getloadavg(),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--backbones",
        nargs="+",
        default=["mobilenet_v2", "alexnet", "resnet18", "resnet50", "vgg16"],
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
    head = ("backbone", "ORT fp32", "torch bf16", "torch fp32", "ORT/fp32", "bf16/ORT")
    head += ("bf16/ORT cpu", "bf16 cos", "pays from", "quiet")
    print(" ".join(f"{h:>12}" for h in head))
    for r in rows:
        ips, cos = r["images_per_s"], r["cosine_to_torch_fp32_min"]
        cells = (r["backbone"], ips["ort_fp32"], ips["torch_bf16"], ips["torch_fp32"])
        cells += (r["ort_vs_torch_fp32"], r["torch_bf16_vs_ort"], r["torch_bf16_vs_ort_cpu"])
        cells += (cos["torch_bf16"], r["bf16_pays_from_photos"], r["bf16_pays_from_photos_quiet"])
        print(" ".join(f"{c!s:>12}" for c in cells))
    result = {"benchmark": "runtime_auto", "rows": rows, "machine": info}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
