"""An optimised CPU runtime for the default model: ONNX Runtime (and OpenVINO) against torch.

    python benchmarks/runtime_onnx.py --rounds 20 --cold 3     # batch 8 at 640x480 (README)
    python benchmarks/runtime_onnx.py --batch 1 --rounds 20 --cold 3 --no-openvino  # a query
    python benchmarks/runtime_onnx.py --cold 0                 # warm figures only

Issue 14 item 5: keep a runtime only if it pays >= 1.5x on the default model (MobileNetV2-NetVLAD,
the shipped ImageNet weights, TF "SAME" padding) with descriptors at cosine >= 0.999 to torch's.
Needs ``pip install onnx onnxscript onnxruntime`` (and ``openvino``); none is a dependency.

- torch, the reference: ``core.features.forward`` on ``core.features.inference_model`` (folded BN,
  channels-last, fp32), after ``tune_process()``, as ``netvlad index`` runs it;
- the model is exported twice with ``torch.onnx.export``: the backbone alone (normalisation +
  MobileNetV2 trunk -> local feature maps) and the whole model (+ NetVLAD + L2), which is what a
  torch-free path would run;
- the traced TF "SAME" padding (a Pad computed from the traced sizes, then the conv) is only right
  at the traced size, even with dynamic axes (``other_sizes`` shows it); ``same_upper`` rewrites
  each such Pad -> Conv as one Conv with ONNX's ``auto_pad=SAME_UPPER``, which is TF's "SAME" at
  any size: right for every H, W, and faster (no Pad, no shape arithmetic);
- ``ort-traced``: ONNX Runtime on the whole model as traced (fixed H, W); ``ort``: on the
  SAME_UPPER graph (dynamic H, W); ``-nospin``: its idle threads sleep; ``-backbone+torch-pool``:
  ONNX Runtime's backbone, then torch's NetVLAD layer; ``openvino``: OpenVINO on the SAME_UPPER
  graph (when installed);
- warm: the same batch of 8 real photos (lund + Berlin, 640 px long side, landscape), the runtimes
  interleaved round by round in one process so that they share the machine's load; images/s is
  the median round, ``x_vs_torch`` the median of the per-round ratios to torch, ``_best`` best
  round against best round;
- cold (``--cold`` fresh subprocesses each): what a CLI pays before its first descriptor: with
  torch, ``import torch``, ``import torchvision``, ``load_checkpoint`` of the model file, the
  inference copy, the first batch; torch-free, ``import onnxruntime``, the session, the first
  batch (numpy is already loaded by this script: ``import_numpy_s`` reads 0; ``from_spawn_s``,
  from the parent's spawn to the first batch's descriptors, includes it and the interpreter).

Each export is checked at other sizes (427x640, 640x480, 481x641) against torch.
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

MIN_SPEEDUP, MIN_COSINE = 1.5, 0.999


def photos(n: int) -> list[Path]:
    """Real photos: lund (1024x768) and the 8 MP Berlin ones, repeated to ``n``."""
    base = sorted((SHARED / "data/lund_street/references").glob("*.jpg"))
    base += sorted((SHARED / "data/exif/gps_photos/opensfm_berlin").glob("*.jpg"))
    return [base[(i * 7) % len(base)] for i in range(n)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def batch_of(paths: list[Path], size: int):
    """(B, 3, H, W) float32 torch tensor, landscape, decoded as the app does."""
    import torch

    from netvlad_gui.core.photos.images import load_tensor

    imgs = [load_tensor(p, size) for p in paths]
    imgs = [t if t.shape[1] <= t.shape[2] else t.transpose(1, 2) for t in imgs]
    return torch.stack(imgs)


# -- the model and its exports ------------------------------------------------------------------
def make_model(tmp: Path):
    """The default model as the app builds it, NetVLAD initialised from lund photos."""
    import torch

    from netvlad_gui.core.config import InitConfig
    from netvlad_gui.core.model.checkpoint import save_checkpoint
    from netvlad_gui.core.model.network import init_netvlad, sample_local_descriptors
    from netvlad_gui.core.model.resolve import resolve_model
    from netvlad_gui.core.photos.images import load_tensor

    torch.manual_seed(0)
    model = resolve_model()  # DEFAULT_MODEL with its shipped weights
    if not model.is_initialised:
        refs = sorted((SHARED / "data/lund_street/references").glob("*.jpg"))[:14]
        images = (load_tensor(p, 640).unsqueeze(0) for p in refs)
        samples = sample_local_descriptors(model, images, 100, 0)
        init_netvlad(model, samples, InitConfig(num_images=14, descriptors_per_image=100))
    path = tmp / "model.pt"
    save_checkpoint(model, path)
    return model.eval(), path


class _Backbone:
    """Normalisation + trunk, as a module to export (``PlaceModel.local_features``)."""

    @staticmethod
    def module(model):
        import torch

        class LocalFeatures(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, images):
                return self.m.local_features(images)

        return LocalFeatures(model).eval()  # export restores a wrapper's mode on the model


def export(module, example, path: Path, dynamic_hw: bool = False) -> dict:
    """``torch.onnx.export`` with the TorchScript exporter (dynamo=False), dynamic batch.

    Height and width are fixed at the example's unless ``dynamic_hw``: the traced graph of the
    TF "SAME" padding is only right at the traced size (see ``other_sizes``). The dynamo exporter
    is tried when the TorchScript one is gone (with dynamic H and W it ran > 9 min here).
    """
    import torch

    t = time.perf_counter()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    kw = {"input_names": ["images"], "output_names": ["out"]}
    try:
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            dynamic_axes={"images": axes, "out": {0: "batch"}},
            **kw,
        )
        how = "torchscript (dynamo=False), opset 17"
    except Exception as exc:  # noqa: BLE001 - report and try the other exporter
        print(json.dumps({"torchscript_exporter_failed": repr(exc)[:300]}), flush=True)
        dims = {k: torch.export.Dim(v, min=1 if k == 0 else 32) for k, v in axes.items()}
        torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=(dims,), **kw)
        how = "dynamo"
    return {
        "exporter": how,
        "dynamic": list(axes.values()),
        "seconds": round(time.perf_counter() - t, 2),
        "mb": _mb(path),
    }


def same_upper(src: Path, dst: Path) -> int:
    """``src`` with core's TF-"SAME" rewrite (``onnxbackbone.same_upper``), saved as ``dst``.

    The app's own rewrite, so that the figures are those of the shipped graph. Returns how many
    convs were rewritten.
    """
    import onnx

    from netvlad_gui.core.model.onnxbackbone import same_upper as rewrite

    g = onnx.load(str(src))
    done = rewrite(g)
    onnx.checker.check_model(g)
    onnx.save(g, str(dst))
    return done


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def ort_session(path: Path, spin: bool = True):
    """ONNX Runtime on the CPU, all graph optimisations, one intra-op thread per core.

    Not core's ``onnxbackbone.session``: the cold worker must not import torch (core's module
    does), and ``spin`` is a setting core fixes (off) that this benchmark compares.

    ``spin=False``: idle threads sleep instead of spinning (torch runs OpenMP PASSIVE here).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = os.cpu_count() or 1
    so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ov_model(path: Path):
    import openvino as ov

    core = ov.Core()
    return core.compile_model(
        str(path),
        "CPU",
        {"INFERENCE_NUM_THREADS": os.cpu_count() or 1, "INFERENCE_PRECISION_HINT": "f32"},
    )


# -- cold start (fresh subprocesses) ------------------------------------------------------------
def worker_cold_torch(model_file: str, batch_file: str) -> dict:
    t0 = time.perf_counter()
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()
    import torch

    t1 = time.perf_counter()
    import torchvision  # noqa: F401 - what core.backbones pulls in

    t2 = time.perf_counter()
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.checkpoint import load_checkpoint
    from netvlad_gui.core.model.features import forward, inference_model

    cfg = ExtractConfig(device="cpu")
    model = inference_model(load_checkpoint(model_file).eval(), cfg)
    t3 = time.perf_counter()
    batch = torch.from_numpy(np.load(batch_file))
    with torch.inference_mode():
        forward(model, batch, cfg)
    t4 = time.perf_counter()
    return {
        "import_torch_s": t1 - t0,
        "import_torchvision_s": t2 - t1,
        "model_s": t3 - t2,
        "first_batch_s": t4 - t3,
        "to_first_batch_s": t4 - t0,
        "from_spawn_s": time.time() - float(os.environ["BENCH_SPAWN"]),
    }


def worker_cold_ort(onnx_file: str, batch_file: str) -> dict:
    t0 = time.perf_counter()
    import numpy  # noqa: F401

    t1 = time.perf_counter()
    import onnxruntime  # noqa: F401

    t2 = time.perf_counter()
    sess = ort_session(Path(onnx_file))
    t3 = time.perf_counter()
    sess.run(None, {"images": np.load(batch_file)})
    t4 = time.perf_counter()
    return {
        "import_numpy_s": t1 - t0,
        "import_onnxruntime_s": t2 - t1,
        "session_s": t3 - t2,
        "first_batch_s": t4 - t3,
        "to_first_batch_s": t4 - t0,
        "from_spawn_s": time.time() - float(os.environ["BENCH_SPAWN"]),
        "torch_loaded": "torch" in sys.modules,
    }


def run_worker(args: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # each worker starts as a fresh user process would
    t = time.perf_counter()
    env["BENCH_SPAWN"] = repr(time.time())  # from_spawn_s: interpreter start and imports included
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_wall_s"] = wall  # + interpreter start and exit
    return r


def cold(n: int, model_file: Path, onnx_file: Path, batch_file: Path) -> dict:
    """Median of ``n`` fresh processes each, torch and torch-free alternating."""
    rows: dict[str, list[dict]] = {"torch": [], "onnxruntime": []}
    if n < 1:
        return {}
    for _ in range(n):
        rows["torch"].append(run_worker(["cold-torch", str(model_file), str(batch_file)]))
        rows["onnxruntime"].append(run_worker(["cold-ort", str(onnx_file), str(batch_file)]))
    out = {}
    for name, rs in rows.items():
        out[name] = {
            k: round(float(np.median([r[k] for r in rs])), 2)
            for k in rs[0]
            if isinstance(rs[0][k], float)
        }
        print(json.dumps({"cold": name, **out[name]}), flush=True)
    return out


# -- warm, interleaved --------------------------------------------------------------------------
def warm(model, onnx: dict[str, Path], batch, rounds: int, openvino: bool) -> tuple[dict, dict]:
    """images/s per runtime (median of rounds, same rounds for all) and cosines to torch."""
    import torch

    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.model.features import forward, inference_model

    cfg = ExtractConfig(device="cpu")
    net = inference_model(model, cfg)
    x = batch.numpy()
    traced, full = ort_session(onnx["traced"]), ort_session(onnx["full"])
    nospin, back = ort_session(onnx["full"], spin=False), ort_session(onnx["backbone"], spin=False)

    def ort_backbone():
        maps = torch.from_numpy(back.run(None, {"images": x})[0])
        return net.pool(maps).numpy()

    runs = {
        "torch": lambda: forward(net, batch, cfg),
        "ort-traced (Pad+Conv, fixed H,W)": lambda: traced.run(None, {"images": x})[0],
        "ort": lambda: full.run(None, {"images": x})[0],
        "ort-nospin": lambda: nospin.run(None, {"images": x})[0],
        "ort-nospin-backbone+torch-pool": ort_backbone,
    }
    if openvino:
        try:
            ov = ov_model(onnx["full"])
            runs["openvino"] = lambda: ov(x)[0]
        except Exception as exc:  # noqa: BLE001 - an optional runtime: say why and go on
            print(json.dumps({"openvino_skipped": repr(exc)[:300]}), flush=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    desc = {}
    with torch.inference_mode():
        for name, fn in runs.items():  # warm-up (oneDNN's caches), and the descriptors compared
            desc[name] = np.asarray(fn(), dtype=np.float32)
            fn()
        for _ in range(rounds):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    n = len(x)
    ref = times["torch"]
    speed, cos = {}, {}
    for name, ts in times.items():
        per_round = [a / b for a, b in zip(ref, ts, strict=True)]
        speed[name] = {
            "images_per_s": round(n / float(np.median(ts)), 2),
            "images_per_s_best": round(n / min(ts), 2),
            "x_vs_torch": round(float(np.median(per_round)), 2),  # median of the rounds' ratios
            "x_vs_torch_best": round(min(ref) / min(ts), 2),  # best round against best round
            "x_vs_torch_per_round": [round(r, 2) for r in per_round],
        }
        c = cosines(desc["torch"], desc[name])
        cos[name] = {"median": round(float(np.median(c)), 6), "min": round(float(c.min()), 6)}
        print(json.dumps({"warm": name, **speed[name], "cosine_to_torch": cos[name]}), flush=True)
    return speed, cos


def other_sizes(model, onnx_full: Path, label: str) -> list[dict]:
    """An export run at other sizes (random images, batch 2): does it refuse, or answer wrong?"""
    import torch

    sess = ort_session(onnx_full)
    rows = []
    torch.manual_seed(1)
    for h, w in ((480, 640), (427, 640), (640, 480), (481, 641)):
        x = torch.rand(2, 3, h, w)
        with torch.inference_mode():
            ref = model(x).numpy()
        try:
            got = sess.run(None, {"images": x.numpy()})[0]
            row = {"hw": [h, w], "cosine_min": round(float(cosines(ref, got).min()), 6)}
        except Exception as exc:  # noqa: BLE001 - the answer is the failure
            row = {"hw": [h, w], "error": str(exc).splitlines()[0][:120]}
        row = {"export": label} | row
        rows.append(row)
        print(json.dumps({"other_size": row}), flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        fn = worker_cold_torch if kind == "cold-torch" else worker_cold_ort
        print(json.dumps(fn(*rest)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8, help="interleaved warm rounds")
    ap.add_argument("--cold", type=int, default=3, help="fresh processes per runtime (0: skip)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=640, help="longer side (ExtractConfig)")
    ap.add_argument("--no-openvino", dest="openvino", action="store_false")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from netvlad_gui.core.model.runtime import tune_process

    tune_process()  # as the CLI does, before torch loads
    import onnxruntime
    import torch

    info = machine() | {"onnxruntime": onnxruntime.__version__}
    try:
        import onnx

        info["onnx"] = onnx.__version__
        import openvino

        info["openvino"] = openvino.__version__
    except ImportError:
        pass
    print(json.dumps({"machine": info}), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model, model_file = make_model(tmp)
        batch = batch_of(photos(args.batch), args.size)
        np.save(tmp / "batch.npy", batch.numpy())
        onnx_files = {k: tmp / f"{k}.onnx" for k in ("traced", "dyn-traced", "full", "backbone")}
        exports = {}
        with torch.no_grad():
            exports["traced"] = export(model, batch[:1], onnx_files["traced"])
            exports["dyn-traced"] = export(model, batch[:1], onnx_files["dyn-traced"], True)
            exports["backbone"] = export(_Backbone.module(model), batch[:1], tmp / "bb.onnx", True)
        exports["full"] = exports["dyn-traced"] | {
            "same_upper_convs": same_upper(onnx_files["dyn-traced"], onnx_files["full"])
        }
        exports["backbone"]["same_upper_convs"] = same_upper(
            tmp / "bb.onnx", onnx_files["backbone"]
        )
        print(json.dumps({"exports": exports}), flush=True)
        sizes = other_sizes(model, onnx_files["traced"], "fixed H, W, as traced")
        sizes += other_sizes(model, onnx_files["dyn-traced"], "dynamic H, W, as traced")
        sizes += other_sizes(model, onnx_files["full"], "dynamic H, W, SAME_UPPER")
        speed, cos = warm(model, onnx_files, batch, args.rounds, args.openvino)
        cold_rows = cold(args.cold, model_file, onnx_files["full"], tmp / "batch.npy")
    best = max((k for k in speed if k != "torch"), key=lambda k: speed[k]["x_vs_torch"])
    result = {
        "benchmark": "runtime_onnx",
        "batch": list(batch.shape),
        "rounds": args.rounds,
        "exports": exports,
        "other_sizes": sizes,
        "warm": speed,
        "cosine_to_torch": cos,
        "cold": cold_rows,
        "verdict": {
            "best": best,
            "x_vs_torch": speed[best]["x_vs_torch"],
            "pays": speed[best]["x_vs_torch"] >= MIN_SPEEDUP and cos[best]["min"] >= MIN_COSINE,
        },
        "machine": info,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
