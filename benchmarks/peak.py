"""Fraction of peak: the backbones' achieved GFLOP/s against torch's own matmul peak, same run.

    python benchmarks/peak.py                     # VGG16 and MobileNetV2 at 640x480
    python benchmarks/peak.py --backbones vgg16 --batch 2 --iters 3

The peak is the best of large square matmuls (several sizes) in fp32 and in bf16, measured in
this process just before the backbones. FLOPs are counted by torch's flop counter (a multiply-add
is 2 FLOPs; VGG16 to conv5_3 is about 188 GFLOP at 640x480). Weights are random (same FLOPs as
trained ones; nothing is downloaded). Each backbone runs fp32, fp32 + channels_last and
bf16 autocast + channels_last; a figure is compared with the peak of the precision it uses.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 4096), reps: int = 3) -> dict:
    best, per = 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)  # warm-up
        t = min(_timed(lambda a=a, b=b: torch.matmul(a, b)) for _ in range(reps))
        per[n] = round(2 * n**3 / t / 1e9, 1)
        best = max(best, per[n])
    return {"best_gflops": best, "by_size": per}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def backbone_flops(backbone: torch.nn.Module, h: int, w: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        backbone(torch.zeros(1, 3, h, w))
    return float(counter.get_total_flops())


def run_backbone(
    name: str, h: int, w: int, batch: int, iters: int, peaks: dict, force_bf16: bool = False
) -> list[dict]:
    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.model.features import fold_batchnorm
    from netvlad_gui.core.model.network import build_model

    model = build_model(ModelConfig.from_name(f"{name}-netvlad"), "none", progress=False)
    bb = model.backbone.eval()
    flops = backbone_flops(bb, h, w)
    x = torch.rand(batch, 3, h, w)
    rows = []
    modes = [("fp32", False, False, False), ("fp32 channels_last", True, False, False)]
    folded = copy.deepcopy(bb)
    if fold_batchnorm(folded):  # the extraction defaults; FLOPs stay those of the full network
        modes.append(("fp32 channels_last + BN folded", True, False, True))
    if peaks["bf16"]["best_gflops"] >= 0.25 * peaks["fp32"]["best_gflops"] or force_bf16:
        modes.append(("bf16 channels_last", True, True, False))
    else:  # no native bf16 (AVX2 only): a VGG16 forward would take minutes per image
        print(f"{name}: bf16 skipped, its matmul peak is {peaks['bf16']['best_gflops']} GFLOP/s")
    for label, cl, bf16, fold in modes:
        net = (folded if fold else bb).to(
            memory_format=torch.channels_last if cl else torch.contiguous_format
        )
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()

        def step(net=net, xi=xi, bf16=bf16):
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                net(xi)

        step()  # warm-up (and oneDNN's kernel choice)
        t = min(_timed(step) for _ in range(iters))
        gflops = flops * batch / t / 1e9
        peak = peaks["bf16" if bf16 else "fp32"]["best_gflops"]
        row = {
            "backbone": name,
            "mode": label,
            "gflop_per_image": round(flops / 1e9, 1),
            "images_per_s": round(batch / t, 2),
            "gflops": round(gflops, 1),
            "peak_gflops": peak,
            "fraction_of_peak": round(gflops / peak, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_fp32"] = round(r["images_per_s"] / base, 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["vgg16", "mobilenet_v2"])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="time bf16 even where it is slow")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    peaks = {
        "fp32": matmul_peak(torch.float32),
        # Without native bf16 instructions (AVX2 only) bf16 matmuls are slow: spare the big one.
        "bf16": matmul_peak(torch.bfloat16, sizes=(256, 512, 1024)),
    }
    print(json.dumps({"matmul_peak": peaks}), flush=True)
    rows = []
    for name in args.backbones:
        rows += run_backbone(
            name, args.height, args.width, args.batch, args.iters, peaks, args.bf16
        )
    print()
    print(
        f"matmul peak: fp32 {peaks['fp32']['best_gflops']} GFLOP/s, "
        f"bf16 {peaks['bf16']['best_gflops']} GFLOP/s"
    )
    print(
        f"{'backbone':14} {'mode':20} {'GFLOP/img':>9} {'img/s':>7} {'GFLOP/s':>8} "
        f"{'of peak':>7} {'x fp32':>6}"
    )
    for r in rows:
        print(
            f"{r['backbone']:14} {r['mode']:20} {r['gflop_per_image']:>9} {r['images_per_s']:>7} "
            f"{r['gflops']:>8} {r['fraction_of_peak']:>7.1%} {r['speedup_vs_fp32']:>6}"
        )
    result = {"benchmark": "peak", "machine": info, "matmul_peak": peaks, "rows": rows}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
