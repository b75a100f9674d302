"""Extraction throughput on real photos: the reference port's way vs the core pipeline, same run.

    python benchmarks/extract.py                                   # MobileNetV2-NetVLAD (default)
    python benchmarks/extract.py --variant '{"jpeg_draft": true}'  # + a variant of ours
    python benchmarks/extract.py --model vgg16-netvlad --images 48
    python benchmarks/extract.py --levers                          # each speed lever on its own

Photos: ../shared/data/lund_street (1024x768) and ../shared/data/exif/gps_photos (8-12 MP),
repeated to ``--images``. Both sides use the same model file (VGG16 has random weights: same
FLOPs, nothing downloaded).

- baseline, in its own subprocess with the default allocator: Pillow decodes the full JPEG and
  resizes it, DataLoader with 2 workers, an eager fp32 forward at batch 24, a NetVLAD layer that
  loops over the clusters, float64 descriptors kept in memory (the reference PyTorch port's way);
- ours, in its own subprocess: ``tune_process()`` then ``core.features.extract`` with the
  default ExtractConfig, exactly as ``netvlad index`` runs it.

Descriptors are compared (cosine per photo). ``--levers`` times each lever alone, in subprocesses
(the allocator cannot be changed back in a process): allocator, OpenMP wait policy,
channels_last, BatchNorm folding, torch.compile, bf16 autocast, batch size, JPEG draft decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine
from _real import SHARED


def photos(n: int) -> list[Path]:
    """Real photos repeated to ``n``: lund (1024x768) and the 8 MP Berlin ones (3264x2448).

    All 4:3, so that the baseline's batches of 24 have one shape, as the port's data sets do.
    """
    base = sorted((SHARED / "data/lund_street/references").glob("*.jpg"))
    base += sorted((SHARED / "data/lund_street/queries").glob("*.jpg"))
    base += sorted((SHARED / "data/exif/gps_photos/opensfm_berlin").glob("*.jpg"))
    return [base[i % len(base)] for i in range(n)]


def big_photos() -> list[Path]:
    """The 8 MP JPEGs: where draft decoding matters."""
    root = SHARED / "data/exif/gps_photos"
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


# -- workers (run in subprocesses) --------------------------------------------------------------
def _load(model_file: str):
    from netvlad_gui.core.model.checkpoint import load_checkpoint

    return load_checkpoint(model_file).eval()


def worker_baseline(model_file: str, paths: list[str], out: str) -> dict:
    """The reference port's way, written here: see the module docstring."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms.functional import pil_to_tensor

    model = _load(model_file)
    pool = model.pool

    class Photos(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            img = Image.open(paths[i]).convert("RGB")  # full-size decode
            w, h = img.size
            s = 640 / max(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR)
            if img.size[0] < img.size[1]:  # one shape per batch, as the port's 640x480 sets
                img = img.transpose(Image.Transpose.ROTATE_90)
            return pil_to_tensor(img).float() / 255.0, i

    def netvlad_loop(x):
        n, c = x.shape[:2]
        x = F.normalize(x, p=2, dim=1)
        a = F.softmax(pool.conv(x).view(n, pool.num_clusters, -1), dim=1)
        x = x.view(n, c, -1)
        vlad = torch.zeros(n, pool.num_clusters, c, dtype=x.dtype)
        for k in range(pool.num_clusters):  # one cluster at a time
            r = x - pool.centroids[k].view(1, c, 1)
            vlad[:, k] = (r * a[:, k : k + 1]).sum(-1)
        vlad = F.normalize(vlad, p=2, dim=2).view(n, -1)
        return F.normalize(vlad, p=2, dim=1)

    loader = DataLoader(Photos(), batch_size=24, num_workers=2)
    feats = np.zeros((len(paths), model.dim), np.float64)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, idx in loader:
            feats[idx.numpy()] = netvlad_loop(model.local_features(x)).numpy()
    secs = time.perf_counter() - t0
    np.save(out, feats.astype(np.float32))
    return {"seconds": secs, "images_per_s": len(paths) / secs}


def worker_ours(model_file: str, paths: list[str], out: str, cfg_json: str) -> dict:
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.features import extract

    cfg = ExtractConfig(device="cpu", **json.loads(cfg_json))
    model = _load(model_file)
    feats = np.zeros((len(paths), model.dim), np.float32)
    t0 = time.perf_counter()
    for item in extract(model, paths, cfg):
        feats[item.index] = item.descriptor
    secs = time.perf_counter() - t0
    np.save(out, feats)
    return {"seconds": secs, "images_per_s": len(paths) / secs, "config": cfg.__dict__}


def worker_forward(model_file: str, paths: list[str], spec_json: str) -> dict:
    """Forward-only timing of one lever setting on preloaded images (decode excluded)."""
    import resource

    spec = json.loads(spec_json)
    from netvlad_gui.core.model import runtime

    if spec.get("alloc") == "threshold":
        runtime.tune_allocator(no_mmap=False)
    elif spec.get("alloc") == "tuned":
        runtime.tune_process()
    import torch

    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.features import forward, inference_model
    from netvlad_gui.core.photos.images import load_tensor

    cfg = ExtractConfig(device="cpu", **spec.get("cfg", {}))
    model = inference_model(_load(model_file), cfg)
    if spec.get("compile"):
        model.backbone = torch.compile(model.backbone)  # inductor; compiled on the first call
    bs = cfg.batch_size
    imgs = [load_tensor(p, cfg.image_size) for p in paths[:bs]]
    imgs = [t if t.shape[1] < t.shape[2] else t.transpose(1, 2) for t in imgs]
    batch = torch.stack(imgs)
    with torch.inference_mode():
        t = time.perf_counter()
        forward(model, batch, cfg)  # warm-up (and torch.compile's compilation)
        warmup = time.perf_counter() - t
        flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times = []
        for _ in range(spec.get("iters", 3)):
            t = time.perf_counter()
            desc = forward(model, batch, cfg)
            times.append(time.perf_counter() - t)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    best = min(times)
    return {
        "images_per_s": bs / best,
        "first_call_s": warmup,
        "minor_faults_per_image": faults / (bs * len(times)),
        "desc": desc[:2].tolist() if spec.get("want_desc") else None,
    }


def worker_decode(model_file: str, draft: bool, size: int) -> dict:
    """Decode time of the 8 MP photos, and their descriptors with this decoding."""
    import torch

    from netvlad_gui.core.photos.images import load_tensor

    big = big_photos()
    t = time.perf_counter()
    for _ in range(2):
        tensors = [load_tensor(p, size, draft=draft) for p in big]
    ms = 1000 * (time.perf_counter() - t) / (2 * len(big))
    model = _load(model_file)
    with torch.inference_mode():
        desc = [model(x.unsqueeze(0))[0].numpy().tolist() for x in tensors]
    return {"ms_per_photo": ms, "photos": len(big), "desc": desc}


# -- driver -------------------------------------------------------------------------------------
def run_worker(args: list[str], env: dict | None = None) -> dict:
    full_env = dict(os.environ)
    full_env.pop("OMP_WAIT_POLICY", None)  # each worker starts as a fresh user process would
    full_env.update(env or {})
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def make_model(name: str, tmp: Path) -> Path:
    """One model file for every subprocess (random VGG16 weights are drawn once)."""
    import torch

    from netvlad_gui.core.config import InitConfig
    from netvlad_gui.core.model.checkpoint import save_checkpoint
    from netvlad_gui.core.model.network import init_netvlad, sample_local_descriptors
    from netvlad_gui.core.model.resolve import resolve_model
    from netvlad_gui.core.photos.images import load_tensor

    torch.manual_seed(0)
    weights = "none" if name.startswith("vgg16") else None
    model = resolve_model(name, weights)
    if not model.is_initialised:
        # Random centroids would make every descriptor alike (and every cosine ~1): initialise
        # the NetVLAD layer from the benchmark's own photos, as `netvlad index` does.
        images = (load_tensor(p, 640).unsqueeze(0) for p in photos(27)[::2])
        samples = sample_local_descriptors(model, images, 100, 0)
        init_netvlad(model, samples, InitConfig(num_images=14, descriptors_per_image=100))
    path = tmp / "model.pt"
    save_checkpoint(model, path)
    return path


def compare(args, tmp: Path, model_file: Path, paths: list[str]) -> list[dict]:
    """Baseline, then each variant of ours; ``--repeat`` times, alternating, on a noisy machine."""
    plist = json.dumps(paths)
    rows = []
    for rep in range(args.repeat):
        base = run_worker(["baseline", str(model_file), plist, str(tmp / "base.npy")])
        print(json.dumps({"baseline": base}), flush=True)
        for variant in args.variants:  # {} first: the defaults, what `netvlad index` runs
            out = tmp / "ours.npy"
            ours = run_worker(["ours", str(model_file), plist, str(out), json.dumps(variant)])
            print(json.dumps({"ours": ours}), flush=True)
            cos = cosines(np.load(tmp / "base.npy"), np.load(out))
            rows.append(
                {
                    "model": args.model,
                    "images": len(paths),
                    "repeat": rep + 1,
                    "variant": variant or "defaults",
                    "baseline_images_per_s": round(base["images_per_s"], 3),
                    "ours_images_per_s": round(ours["images_per_s"], 3),
                    "speedup": round(ours["images_per_s"] / base["images_per_s"], 2),
                    "cosine_to_baseline_min": round(float(cos.min()), 5),
                    "cosine_to_baseline_median": round(float(np.median(cos)), 5),
                    "ours_config": ours["config"],
                }
            )
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per variant: the median speed-up over the repeats (each against its own baseline run)."""
    out = []
    for v in dict.fromkeys(json.dumps(r["variant"]) for r in rows):
        mine = [r for r in rows if json.dumps(r["variant"]) == v]
        out.append(
            {
                "variant": json.loads(v),
                "repeats": len(mine),
                "speedup_median": round(float(np.median([r["speedup"] for r in mine])), 2),
                "speedups": [r["speedup"] for r in mine],
                "ours_images_per_s": [r["ours_images_per_s"] for r in mine],
                "baseline_images_per_s": [r["baseline_images_per_s"] for r in mine],
                "cosine_to_baseline_min": min(r["cosine_to_baseline_min"] for r in mine),
            }
        )
    return out


def levers(tmp: Path, model_file: Path, paths: list[str], batch: int) -> list[dict]:
    """Each lever alone, forward-only on the same preloaded batch, each in a fresh process."""
    plist = json.dumps(paths)
    rows = []

    def fwd(name, spec, env=None, base=None, ref=None):
        r = run_worker(["forward", str(model_file), plist, json.dumps(spec)], env)
        row = {
            "lever": name,
            "images_per_s": round(r["images_per_s"], 2),
            "minor_faults_per_image": round(r["minor_faults_per_image"]),
            "first_call_s": round(r["first_call_s"], 2),
        }
        if base:
            row["x_vs_first"] = round(r["images_per_s"] / base["images_per_s"], 2)
        if ref is not None:
            cos = cosines(np.array(ref["desc"]), np.array(r["desc"]))
            row["cosine_to_fp32_min"] = round(float(cos.min()), 6)
        rows.append(row)
        print(json.dumps(row), flush=True)
        return r

    # The rows before "+ fold BN" run fp32 NCHW without folding (the defaults before them).
    b = {"batch_size": batch, "channels_last": False, "fold_batchnorm": False}
    first = fwd("alloc: glibc default", {"alloc": "default", "cfg": b})
    fwd("alloc: thresholds only (32 MB cap)", {"alloc": "threshold", "cfg": b}, base=first)
    fp32 = fwd(
        "alloc: tune_process (+ M_MMAP_MAX=0)",
        {"alloc": "tuned", "cfg": b, "want_desc": True},
        base=first,
    )
    fwd(
        "  + OMP_WAIT_POLICY=ACTIVE",
        {"alloc": "tuned", "cfg": b},
        {"OMP_WAIT_POLICY": "ACTIVE"},
        base=first,
    )
    both = b | {"channels_last": True, "fold_batchnorm": True}  # the defaults now
    for label, cfg, extra in (
        ("  + channels_last", b | {"channels_last": True}, {}),
        ("  + fold BN", b | {"fold_batchnorm": True}, {}),
        ("  + fold BN + channels_last", both, {}),
        ("  + fold BN + channels_last + torch.compile", both, {"compile": True}),
        ("  + fold BN + channels_last + bf16 autocast", both | {"bf16": True}, {}),
    ):
        spec = {"alloc": "tuned", "want_desc": True, "cfg": cfg} | extra
        fwd(label, spec, base=first, ref=fp32)
    for bs in (1, 4, 16):
        fwd(
            f"  + fold BN + channels_last, batch {bs}",
            {"alloc": "tuned", "cfg": both | {"batch_size": bs}},
            base=first,
        )
    full = None
    for draft in (False, True):
        r = run_worker(["decode", str(model_file), json.dumps(draft), "640"])
        row = {
            "lever": f"JPEG draft {'on' if draft else 'off'} (8 MP photos, decode only)",
            "decode_ms_per_photo": round(r["ms_per_photo"], 1),
        }
        if full is None:
            full = r
        else:
            row["x_vs_full_decode"] = round(full["ms_per_photo"] / r["ms_per_photo"], 2)
            cos = cosines(np.array(full["desc"]), np.array(r["desc"]))
            row["cosine_to_full_decode_min"] = round(float(cos.min()), 5)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "baseline":
            r = worker_baseline(rest[0], json.loads(rest[1]), rest[2])
        elif kind == "ours":
            r = worker_ours(rest[0], json.loads(rest[1]), rest[2], rest[3])
        elif kind == "forward":
            r = worker_forward(rest[0], json.loads(rest[1]), rest[2])
        else:
            r = worker_decode(rest[0], json.loads(rest[1]), int(rest[2]))
        print(json.dumps(r))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2-netvlad")
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--levers", action="store_true", help="time each lever instead")
    ap.add_argument("--batch", type=int, default=8, help="batch for the lever timings")
    ap.add_argument(
        "--variant",
        dest="variants",
        action="append",
        type=json.loads,
        help="ExtractConfig overrides to time besides the defaults, e.g. '{\"jpeg_draft\": true}'",
    )
    ap.add_argument("--repeat", type=int, default=1, help="baseline/ours rounds, alternating")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.variants = [{}] + (args.variants or [])
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    paths = [str(p) for p in photos(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        model_file = make_model(args.model, Path(tmp))
        if args.levers:
            result = {
                "benchmark": "extract-levers",
                "model": args.model,
                "rows": levers(Path(tmp), model_file, paths, args.batch),
            }
        else:
            rows = compare(args, Path(tmp), model_file, paths)
            result = {"benchmark": "extract", "summary": summary(rows), "rows": rows}
    result["machine"] = info
    print()
    for k, v in result.items():
        if k not in ("machine", "rows", "summary"):
            print(f"{k:28} {v}")
    for r in result.get("rows", []) + result.get("summary", []):
        print("  ".join(f"{k}={v}" for k, v in r.items() if k != "ours_config"))
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
