"""`netvlad`: the headless front end. Every command is a thin shell over netvlad_gui.core."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tqdm import tqdm

from .core.config import DEFAULT_MODEL, ExtractConfig, LocateConfig

log = logging.getLogger("netvlad")


class CliError(Exception):
    """A failure to report as one line, exit code 1."""


class StageBar:
    """One tqdm bar per stage (scan, init, extract…), on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="img", file=sys.stderr, leave=False)
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _extract_cfg(args) -> ExtractConfig:
    cfg = ExtractConfig(device=args.device)
    if getattr(args, "batch_size", None):
        cfg.batch_size = args.batch_size
    if getattr(args, "workers", None) is not None:
        cfg.num_workers = args.workers
    if getattr(args, "image_size", None):
        cfg.image_size = args.image_size
    cfg.jpeg_draft = bool(getattr(args, "jpeg_draft", False))
    return cfg


def _open_index(args):
    from .core.index import LibraryIndex
    from .core.paths import default_index_dir

    if args.index:
        return LibraryIndex(args.index)
    if args.library:
        return LibraryIndex(default_index_dir(args.library))
    raise CliError("say which index to use: --library DIR or --index DIR")


# -- commands ---------------------------------------------------------------------------------
def _distributed_cfg(args):
    """``--ray [ADDRESS]``: None without it; a local Ray for a bare --ray."""
    if args.ray is None:
        return None
    from .core.config import DistributedConfig

    cfg = DistributedConfig(address=None if args.ray == "local" else args.ray)
    if args.ray_actors:
        cfg.actors = args.ray_actors
    return cfg


def cmd_index(args) -> int:
    from .core.builder import build_index

    bar = StageBar(not args.quiet)
    try:
        s = build_index(
            args.library,
            args.index,
            model_spec=args.model,
            backbone_weights=args.backbone_weights,
            extract_cfg=_extract_cfg(args),
            distributed=_distributed_cfg(args),
            progress=bar,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(s.to_json()))
        return 0
    print(f"library   {s.library}")
    print(f"index     {s.index_dir}")
    print(f"model     {s.model}")
    print(f"indexed   {s.indexed} photos ({s.extracted} new or changed, {s.removed} removed)")
    print(f"with GPS  {s.with_gps}; no GPS {len(s.no_gps)}")
    for p, r in s.no_gps[:20]:
        print(f"  no GPS  {p}: {r}")
    print(f"skipped   {len(s.failed)}")
    for p, r in s.failed:
        print(f"  skipped {p}: {r}")
    rate = s.extracted / s.elapsed_s if s.elapsed_s else 0.0
    print(f"time      {s.elapsed_s:.1f} s ({rate:.2f} images/s)")
    print(f"size      {s.bytes_per_image / 1024:.1f} KiB per image")
    return 0


def cmd_locate(args) -> int:
    from .core.images import expand_inputs
    from .core.locate import Locator

    index = _open_index(args)
    photos = expand_inputs(args.photos)
    if not photos:
        raise CliError("no photos to locate")
    locator = Locator(
        index, extract_cfg=_extract_cfg(args), locate_cfg=LocateConfig(top_n=args.top)
    )
    failures = 0
    for res in tqdm(
        locator.locate_many(photos, args.top),
        total=len(photos),
        file=sys.stderr,
        disable=args.quiet or len(photos) < 2,
        unit="photo",
    ):
        failures += bool(res.error)
        if args.json:
            print(json.dumps(res.to_json()), flush=True)
            continue
        print(res.query)
        if res.error:
            print(f"  cannot locate: {res.error}")
            continue
        if res.lat is None:
            print("  no match with GPS")
        else:
            print(
                f"  location   {res.lat:.6f}, {res.lon:.6f}  ±{res.radius_m:.0f} m  "
                f"confidence {res.confidence:.2f}"
            )
        if res.error_m is not None:
            print(f"  error      {res.error_m:.1f} m from the photo's own GPS")
        for m in res.matches:
            dist = f"{m.distance_m:7.1f} m" if m.distance_m is not None else "   no GPS"
            print(f"  #{m.rank:<2} {m.score:.3f} {dist}  {m.path}")
    return 1 if failures == len(photos) else 0


def cmd_info(args) -> int:
    import torch

    from .core.paths import data_dir, models_dir

    info = {
        "default_model": DEFAULT_MODEL,
        "shipped_models": str(models_dir()),
        "data_dir": str(data_dir()),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    if args.index or args.library:
        index = _open_index(args)
        st = index.stats()
        info["index"] = {
            "dir": str(index.dir),
            "library": st.library,
            "model": st.model,
            "dim": st.dim,
            "indexed": st.indexed,
            "with_gps": st.with_gps,
            "failed": st.failed,
            "pending": st.pending,
            "bytes_per_image": round(st.bytes_per_image),
        }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            if isinstance(v, dict):
                print(f"{k}:")
                for k2, v2 in v.items():
                    print(f"  {k2:16} {v2}")
            else:
                print(f"{k:18} {v}")
    return 0


def cmd_models(args) -> int:
    from .core import zoo

    if args.action == "get":
        if not args.name:
            raise CliError("usage: netvlad models get NAME")
        bar = tqdm(unit="B", unit_scale=True, file=sys.stderr, desc=args.name)

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            path = zoo.get_model(args.name, progress=progress)
        finally:
            bar.close()
        print(path)
        return 0
    for m in zoo.list_models():
        state = "ready" if m.available else "download" if m.kind == "download" else "online"
        print(f"{m.name:28} {state:9} {m.description}")
    return 0


def cmd_import(args) -> int:
    from .core.importers import import_checkpoint

    out = import_checkpoint(args.file, args.out)
    print(out)
    return 0


# -- parser -----------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help=f"BACKBONE-POOLING, a named model or a checkpoint file (default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--backbone-weights",
        metavar="FILE|none",
        help="a torchvision-layout state dict, or 'none' for random weights (tests)",
    )


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="image decoding processes")
    p.add_argument("--image-size", type=int, help="longer side in pixels (default 640)")
    p.add_argument(
        "--jpeg-draft",
        action="store_true",
        help="decode large JPEGs at 1/2-1/8 scale first: 4x faster decoding of 8 MP photos, "
        "descriptors within cosine 0.99 of a full decode (off by default)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="netvlad", description=__doc__)
    ap.add_argument("--verbose", "-v", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index (or update the index of) a folder of geotagged photos")
    p.add_argument("library")
    p.add_argument("--index", help="index folder (default: in the user data folder)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="extract on Ray Data: a local Ray, or the cluster at ADDRESS "
        '(needs pip install ".[distributed]")',
    )
    p.add_argument("--ray-actors", type=int, help="model-holding Ray actors (default: per CPU/GPU)")
    _add_model_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("locate", help="tell where photos were taken")
    p.add_argument("photos", nargs="+", help="photos or folders")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--library")
    g.add_argument("--index")
    p.add_argument("--top", type=int, default=LocateConfig.top_n)
    p.add_argument("--json", action="store_true", help="one JSON object per photo")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_locate)

    p = sub.add_parser("info", help="model, device and library statistics")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--library")
    g.add_argument("--index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list named models, or `models get NAME` to download one")
    p.add_argument("action", nargs="?", choices=["list", "get"], default="list")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("import", help="convert a trained NetVLAD (MATLAB, Nanne, Patch-NetVLAD)")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="our checkpoint file to write")
    p.set_defaults(func=cmd_import)
    from .cli_train import add_train_commands

    add_train_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.runtime import tune_process

    tune_process()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("netvlad: interrupted; finished work is kept, run again to resume", file=sys.stderr)
        return 130
    except (CliError, OSError, ValueError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"netvlad: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
