"""`netvlad index | locate | info | models | import`: the library's commands, thin shells over core."""

from __future__ import annotations

import argparse
import json

from ..core.config import (
    DEFAULT_MODEL,
    DEVICES,
    PRECISIONS,
    RUNTIMES,
)
from .common import (
    CliError,
    DefaultsHelpFormatter,
    StageBar,
    add_model_args,
    add_runtime_args,
    extract_cfg,
    index_dir,
    plain,
    progress_bar,
    update_bar,
)
from .locating import add_locate_command


def _open_index(args):
    from ..core.library.index import LibraryIndex

    return LibraryIndex(index_dir(args))


# -- commands ---------------------------------------------------------------------------------
def _distributed_cfg(args):
    """``--ray [ADDRESS]``: None without it; a local Ray for a bare --ray."""
    if args.ray is None:
        return None
    from ..core.config import DistributedConfig

    cfg = DistributedConfig(address=None if args.ray == "local" else args.ray)
    if args.ray_actors:
        cfg.actors = args.ray_actors
    return cfg


def cmd_index(args) -> int:
    from ..core.library.builder import build_index

    bar = StageBar(not args.quiet)
    try:
        s = build_index(
            args.library,
            args.index,
            model_spec=args.model,
            backbone_weights=args.backbone_weights,
            extract_cfg=extract_cfg(args),
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
        print(f"  no GPS  {plain(p)}: {plain(r)}")
    print(f"skipped   {len(s.failed)}")
    for p, r in s.failed:
        print(f"  skipped {plain(p)}: {plain(r)}")
    for w in s.warnings:
        print(f"warning   {plain(w)}")
    rate = s.extracted / s.elapsed_s if s.elapsed_s else 0.0
    print(f"time      {s.elapsed_s:.1f} s ({rate:.2f} images/s)")
    print(f"size      {s.bytes_per_image / 1024:.1f} KiB per image")
    return 0


def cmd_info(args) -> int:
    from importlib import metadata

    from ..core.model.runtime import (
        NATIVE_BF16_FLAGS,
        backbone_precision,
        cpu_flags,
        engines_info,
        gpu_present,
    )
    from ..core.paths import data_dir, models_dir
    from ..core.query.locate import index_engines_info

    info = {
        "default_model": DEFAULT_MODEL,
        "shipped_models": str(models_dir()),
        "data_dir": str(data_dir()),
        "torch": metadata.version("torch"),
        "device": "cpu",
        "cuda_devices": [],
    }
    if gpu_present():  # only then is torch worth importing to ask
        from ..core.preload import load_engine

        load_engine()
        import torch

        info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    cfg = extract_cfg(args)
    device = cfg.device if cfg.device != "auto" else info["device"]
    # what --precision auto means when torch runs the backbone on this device
    info["precision"] = backbone_precision(cfg, device.partition(":")[0])
    info["precision_asked"] = cfg.precision
    info["cpu_bf16_flags"] = sorted(cpu_flags() & NATIVE_BF16_FLAGS)
    info.update(engines_info(cfg, _backbone_of(args.model)))  # what runs which job, and why
    if args.index or args.library:
        index = _open_index(args)
        st = index.stats()
        info["index"] = {
            "dir": str(index.dir),
            "library": st.library,
            "model": st.model,
            "dim": st.dim,
            "image_size": index.image_size,  # px, longer side: every extraction uses it
            "indexed": st.indexed,
            "with_gps": st.with_gps,
            "failed": st.failed,
            "pending": st.pending,
            "bytes_per_image": round(st.bytes_per_image),
            "dead_rows": st.dead_rows,  # store rows no photo uses; compacted past a share
            "dead_share": round(st.dead_share, 3),
        }
        info["index"].update(index_engines_info(index, cfg))
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


def _backbone_of(spec: str | None) -> str | None:
    """The backbone of a model spec (a checkpoint file's read without torch), for ``info``."""
    if not spec:
        return None
    from ..core.model.ckptfile import CheckpointFormatError
    from ..core.model.ortmodel import ModelFile
    from ..core.model.resolve import looks_like_file

    if looks_like_file(spec):
        try:
            return ModelFile.read(spec).backbone or None
        except (OSError, CheckpointFormatError):
            return None
    return spec.partition("-")[0]


def cmd_models(args) -> int:
    from ..core.model import zoo

    if args.action == "get":
        if not args.name:
            raise CliError("usage: netvlad models get NAME")
        bar = progress_bar(None, args.name, "B", unit_scale=True, disable=args.quiet)

        def progress(done: int, total: int | None) -> None:
            update_bar(bar, done, total)

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
    from ..core.preload import load_engine

    load_engine()
    from ..core.model.importers import import_checkpoint

    out = import_checkpoint(args.file, args.out)
    print(out)
    return 0


# -- parser -----------------------------------------------------------------------------------
def _add_index_choice(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--library", help="a library folder: its index in the user data folder")
    g.add_argument("--index", help="an index folder")


def add_library_commands(sub) -> None:
    """Register index, locate, info, models and import on the CLI's subparsers."""
    fmt = {"formatter_class": DefaultsHelpFormatter}
    p = sub.add_parser(
        "index", help="index (or update the index of) a folder of geotagged photos", **fmt
    )
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
    add_model_args(
        p,
        "BACKBONE-POOLING, a named model or a checkpoint file",
        "a torchvision-layout state dict, or 'none' for random weights (tests)",
    )
    add_runtime_args(p)
    p.set_defaults(func=cmd_index)

    add_locate_command(sub, _add_index_choice)

    p = sub.add_parser("info", help="model, device and library statistics", **fmt)
    _add_index_choice(p, required=False)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", choices=DEVICES, help="say precision for it")
    p.add_argument(
        "--precision", choices=list(PRECISIONS), help="say what this asks for on this machine"
    )
    p.add_argument(
        "--runtime", choices=list(RUNTIMES), help="say what runs the backbone if this is asked for"
    )
    p.add_argument(
        "--model",
        help=f"say what runs this model (BACKBONE-POOLING or a checkpoint; default {DEFAULT_MODEL})",
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "models", help="list named models, or `models get NAME` to download one", **fmt
    )
    p.add_argument("action", nargs="?", choices=["list", "get"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "import", help="convert a trained NetVLAD (MATLAB, Nanne, Patch-NetVLAD)", **fmt
    )
    p.add_argument("file")
    p.add_argument("--out", required=True, help="our checkpoint file to write")
    p.set_defaults(func=cmd_import)
