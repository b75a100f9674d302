"""`netvlad train` and `netvlad eval`: thin shells over netvlad_gui.core.training.train / .evaluate.

``add_train_commands(subparsers)`` registers both on the main parser. Data sources (one of):
``--data DIR`` (a geotagged folder, split by geography), ``--database DIR --queries DIR``
(GPS, ``--frame-spacing-m S`` for a sequence, or ``--gt CSV`` for eval), or
``--dbstruct MAT --image-root DIR`` (Pittsburgh / Tokyo TM).

Multi-GPU (or multi-process CPU) training: ``torchrun --nproc_per_node=N -m netvlad_gui.cli train …``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..core.config import (
    DEVICES,
    RECALL_RADIUS_M,
    SEQUENCE_GROUP_RANGE,
    InitConfig,
    ModelConfig,
    SequenceConfig,
    VerifyConfig,
)
from ..core.trainconfig import (
    AMP_DTYPES,
    LOSSES,
    NO_SPLIT,
    PAIR_HOLDOUT,
    SPLIT_METHODS,
    TRAIN_LAYERS,
    DataSpec,
    SplitConfig,
)
from .common import (
    CliError,
    DefaultsHelpFormatter,
    add_model_args,
    add_option,
    add_runtime_args,
    extract_cfg,
    progress_bar,
    update_bar,
)

# (option, TrainConfig field, type, help). Defaults stay None so that a resume knows what was given;
# the help's {default} is read from TrainConfig when help is shown.
_TRAIN_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--batch-size", "batch_size", int, "training tuples per SGD step (default {default})"),
    ("--lr", "lr", float, "learning rate (default {default})"),
    ("--momentum", "momentum", float, "SGD momentum (default {default})"),
    ("--weight-decay", "weight_decay", float, "default {default}"),
    ("--lr-step", "lr_step_epochs", int, "epochs between lr decays (default {default})"),
    ("--lr-gamma", "lr_gamma", float, "lr factor at each decay (default {default})"),
    ("--margin", "margin", float, "loss margin (default {default})"),
    ("--neg-samples", "neg_samples", int, "random negatives ranked per query (default {default})"),
    (
        "--neg-per-tuple",
        "neg_per_tuple",
        int,
        "hardest violating negatives kept (default {default})",
    ),
    ("--neg-cache", "neg_cache", int, "hardest negatives remembered per query (default {default})"),
    (
        "--cache-refresh",
        "cache_refresh_queries",
        int,
        "recompute the descriptor cache every N queries (default {default})",
    ),
    ("--image-size", "image_size", int, "longer image side in pixels (default {default})"),
    (
        "--cache-batch-size",
        "cache_batch_size",
        int,
        "images per batch when caching (default {default})",
    ),
    ("--workers", "num_workers", int, "image decoding threads (default {default})"),
    ("--seed", "seed", int, "random seed (default {default})"),
    (
        "--augment",
        "augment_variants",
        int,
        "synthetic-night variants of each database photo, added as queries (default {default})",
    ),
    (
        "--whitening-dim",
        "whitening_dim",
        int,
        "PCA-whitening size after training, 0 for none (default {default}; none with fewer images)",
    ),
    (
        "--num-clusters",
        "num_clusters",
        int,
        "NetVLAD clusters K of a new model (default {default})",
    ),
]


def _train_default(name: str):
    """TrainConfig's default for a field (imported only when help is shown: it loads torch)."""
    from ..core.trainconfig import MiningConfig, TrainConfig

    if name == "margin":
        sq, unsq = (MiningConfig.default_margin(loss) for loss in LOSSES)
        return f"{sq:g} squared, {unsq:.4g} unsquared"
    value = TrainConfig().option(name)
    if name == "num_clusters" and value is None:
        return ModelConfig.num_clusters  # None: the model's own
    return value


def _split_default(name: str):
    """SplitConfig's default for a field."""

    if name == "fractions":
        fmt = lambda f: ",".join(f"{x:g}" for x in f)
        return (
            f"{fmt(SplitConfig.fractions)} for --data; for --database/--queries "
            f"{fmt(PAIR_HOLDOUT)} in train (the last quarter of the route held out, whole with "
            f"--val-*) and {fmt(NO_SPLIT)} in eval; {fmt(NO_SPLIT)} for --dbstruct"
        )
    return getattr(SplitConfig, name)


# (option after the prefix, argparse keywords) of the data source options; validation repeats them
# with a "val-" prefix.
_SOURCE_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("data", {"metavar": "DIR", "help": "a folder of geotagged photos, split by geography"}),
    ("database", {"metavar": "DIR", "help": "reference photos (with --queries)"}),
    ("queries", {"metavar": "DIR", "help": "query photos (with --database)"}),
    (
        "frame-spacing-m",
        {
            "type": float,
            "metavar": "S",
            "help": "image sequences without GPS: frame i sits at i*S metres along a line",
        },
    ),
    (
        "gt",
        {
            "metavar": "CSV",
            "help": "index ground truth: query,ref1;ref2;… relative to the CSV's folder",
        },
    ),
    ("dbstruct", {"metavar": "MAT", "help": "a Pittsburgh / Tokyo TM dbStruct .mat"}),
    ("image-root", {"metavar": "DIR", "help": "where the dbStruct's file names are"}),
]


def _add_data_args(group, *, prefix: str = "", gt: bool = True) -> None:
    for name, kwargs in _SOURCE_OPTIONS:
        if name == "gt" and not gt:
            continue
        group.add_argument(f"--{prefix}{name}", **kwargs)


def _add_source_args(p: argparse.ArgumentParser, *, gt: bool) -> None:
    g = p.add_argument_group("data (one of --data, --database/--queries, --dbstruct)")
    _add_data_args(g, gt=gt)
    s = p.add_argument_group("geographic split")
    add_option(
        s,
        "--split-fractions",
        metavar="T,V,T",
        default_of=lambda: _split_default("fractions"),
        help="train,val,test shares (default {default})",
    )
    add_option(
        s,
        "--split-method",
        choices=SPLIT_METHODS,
        default_of=lambda: _split_default("method"),
        help="consecutive stretches of the route (track) or grid cells (default {default})",
    )
    add_option(
        s,
        "--cell-m",
        type=float,
        default_of=lambda: _split_default("cell_m"),
        help="grid cell size in metres (default {default})",
    )
    add_option(
        s,
        "--gap-m",
        type=float,
        default_of=lambda: _split_default("gap_m"),
        help="drop val/test images this close to training images (default {default})",
    )
    add_option(
        s,
        "--query-every",
        type=int,
        default_of=lambda: _split_default("query_every"),
        help="a folder's val/test splits: every Nth photo is a query (default {default})",
    )


def _data_spec(args, prefix: str = "") -> DataSpec:
    get = lambda name: getattr(args, prefix + name, None)
    return DataSpec(
        data=get("data"),
        database=get("database"),
        queries=get("queries"),
        frame_spacing_m=get("frame_spacing_m"),
        gt=get("gt"),
        dbstruct=get("dbstruct"),
        image_root=get("image_root"),
    )


def _split_config(args):
    """A SplitConfig when any split option is given, else None (the source's default)."""
    given = {
        "method": args.split_method,
        "cell_m": args.cell_m,
        "gap_m": args.gap_m,
        "query_every": args.query_every,
    }
    if args.split_fractions:
        try:
            fractions = tuple(float(x) for x in args.split_fractions.split(","))
        except ValueError:
            raise CliError(
                f"--split-fractions wants three numbers like 0.7,0.15,0.15, "
                f"got {args.split_fractions!r}"
            ) from None
        if len(fractions) != 3:
            raise CliError(f"--split-fractions wants three numbers, got {args.split_fractions!r}")
        given["fractions"] = fractions
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    return SplitConfig(**given)


# -- train ------------------------------------------------------------------------------------


class _HumanProgress:
    """Readable progress on stderr (when --json-progress is off)."""

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "start":
            print(
                f"training on {ev['train'].get('source') or ev['train']['name']}: "
                f"{ev['train']['database']} database, "
                f"{ev['trainable_queries']} trainable queries ({ev['no_positive']} without a "
                f"positive), device {ev['device']} x{ev['world_size']}, epochs "
                f"{ev['start_epoch']}..{ev['epochs']}",
                file=sys.stderr,
            )
            if ev.get("val"):
                print(
                    f"held-out places of {ev['val'].get('source') or ev['val']['name']}: "
                    f"{ev['val']['database']} database, "
                    f"{ev['val']['queries']} queries",
                    file=sys.stderr,
                )
        elif kind == "init":
            print(
                f"NetVLAD initialised from {ev['descriptors']} descriptors of {ev['images']} "
                f"images (alpha {ev['alpha']:.1f})",
                file=sys.stderr,
            )
        elif kind == "step" and (ev["step"] % self.every == 0 or ev["step"] == ev["steps"]):
            print(
                f"  epoch {ev['epoch']} step {ev['step']}/{ev['steps']} loss {ev['loss']:.4f} "
                f"lr {ev['lr']:.2e}",
                file=sys.stderr,
            )
        elif kind == "val":
            print(
                f"  val epoch {ev['epoch']}: R@1 {ev['recall@1']:.3f} R@5 {ev['recall@5']:.3f} "
                f"R@10 {ev['recall@10']:.3f}{'  (best)' if ev['best'] else ''}",
                file=sys.stderr,
            )
        elif kind == "epoch":
            sk = ev["skipped"]
            print(
                f"epoch {ev['epoch']}/{ev['epochs']}: loss {ev['loss']:.4f}, {ev['tuples']} "
                f"tuples, skipped {sk['no_positive']} no positive / {sk['easy']} easy, "
                f"{ev['seconds']:.0f} s",
                file=sys.stderr,
            )
        elif kind == "whitening":
            print(f"PCA-whitening to {ev['dim']} dims on {ev['images']} images", file=sys.stderr)
        elif kind == "heldout":
            when = "before training" if ev["stage"] == "before" else "after training"
            print(
                f"held-out places ({ev['queries']} queries, never trained on): Recall@1 "
                f"{100 * ev['recall@1']:.1f}%, Recall@5 {100 * ev['recall@5']:.1f}% {when}",
                file=sys.stderr,
            )


def _json_progress(ev: dict) -> None:
    print(json.dumps(ev), flush=True)


def cmd_train(args) -> int:
    from ..core.preload import load_engine

    load_engine()  # torch and torchvision, the collector paused: 0.6-0.9 s less
    from ..core.training.train import LAST, TrainConfig, resume_config, train

    options: dict[str, Any] = {field: getattr(args, field) for _, field, _, _ in _TRAIN_OPTIONS}
    options.update(
        epochs=args.epochs,
        device=args.device,
        model=args.model,
        backbone_weights=args.backbone_weights,
        loss=args.loss,
        train_layers=args.train_layers,
        amp=args.amp,
        amp_dtype=args.amp_dtype,
        train_assignment_bias=args.train_assignment_bias,
        init_from_queries=args.init_from_queries,
        keep_epoch_checkpoints=args.keep_epochs,
    )
    data, val = _data_spec(args).absolute(), _data_spec(args, "val_").absolute()
    if val.dbstruct and not val.image_root:
        val.image_root = data.image_root
    split = _split_config(args)
    out = Path(args.out).expanduser()
    if args.resume and (out / LAST).is_file():
        overrides = {k: v for k, v in options.items() if v is not None}
        cfg = resume_config(
            out,
            {
                **overrides,
                "data": data,
                "val": val,
                **({"split": split} if split is not None else {}),
            },
        )
    else:
        if not data.given:
            raise CliError(
                "name the training data: --data DIR, --database DIR --queries DIR, "
                "or --dbstruct MAT --image-root DIR"
            )
        given = {k: v for k, v in options.items() if v is not None}
        if args.init_images:
            from ..core.config import InitConfig

            given["init"] = InitConfig(num_images=args.init_images)
        cfg = TrainConfig(data=data, val=val, split=split, **given)
    progress = _json_progress if args.json_progress else _HumanProgress()
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    try:
        result = train(cfg, out, resume=args.resume, progress=progress)
    except (Exception, KeyboardInterrupt) as exc:
        if args.json_progress and rank0:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _json_progress({"event": "error", "message": msg})
        raise
    if not args.json_progress and rank0:
        best = (
            f"best epoch {result.best_epoch} (val R@5 {result.best_recall5:.3f})"
            if result.best_epoch
            else "no validation set: last epoch kept"
        )
        print(f"model     {result.model_path}\n{best}")
        print(heldout_line(result.heldout))
    return 0


def heldout_line(heldout: dict | None) -> str:
    """The figure a user decides by: Recall@1 on places the run never trained on."""
    from ..core.training.runs import heldout_change, heldout_summary

    if not (heldout or {}).get("after"):
        return "held-out  none: no places were kept out of training, so no figure for unseen places"
    return f"held-out  {heldout_change(heldout, '->')}: {heldout_summary(heldout)}"


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train NetVLAD weakly supervised (the paper's triplet ranking loss)",
        description="Weakly supervised NetVLAD training (Arandjelovic et al. 2016). Writes "
        "RUN_DIR/last.pt each epoch, best.pt (best val R@5) and model.pt (with "
        "PCA-whitening). Runs under torchrun for several GPUs or processes.",
        formatter_class=DefaultsHelpFormatter,
    )
    _add_source_args(p, gt=True)
    v = p.add_argument_group("validation set (default: the val split of the training data)")
    _add_data_args(v, prefix="val-")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="folder for checkpoints")
    add_option(
        p,
        "--epochs",
        type=int,
        default_of=lambda: _train_default("epochs"),
        help="default {default}",
    )
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR exactly")
    p.add_argument(
        "--json-progress",
        action="store_true",
        help="one JSON object per line on stdout (see netvlad_gui/core/training/train.py)",
    )
    add_model_args(
        p,
        "BACKBONE-POOLING or a checkpoint to start from",
        "torchvision-layout weights (default: shipped / torchvision)",
    )
    t = p.add_argument_group("training options (defaults: the paper's)")
    add_option(
        t,
        "--loss",
        choices=LOSSES,
        default_of=lambda: _train_default("loss"),
        help="the paper's squared distances or the PyTorch ports' plain ones (default {default})",
    )
    add_option(
        t,
        "--train-layers",
        choices=TRAIN_LAYERS,
        default_of=lambda: _train_default("train_layers"),
        help="what trains besides NetVLAD (default {default})",
    )
    t.add_argument(
        "--train-assignment-bias",
        action="store_const",
        const=True,
        help="also train NetVLAD's assignment bias (Relja keeps it 0)",
    )
    t.add_argument(
        "--no-amp", dest="amp", action="store_const", const=False, help="no mixed precision on CUDA"
    )
    add_option(
        t,
        "--amp-dtype",
        choices=AMP_DTYPES,
        default_of=lambda: _train_default("amp_dtype"),
        help="mixed-precision type on CUDA, auto: bfloat16 where supported (default {default})",
    )
    t.add_argument(
        "--keep-epochs",
        action="store_const",
        const=True,
        help="keep a checkpoint per epoch (epoch_NNN.pt)",
    )
    t.add_argument(
        "--init-images",
        type=int,
        help=f"images sampled for k-means (default {InitConfig.num_images})",
    )
    add_option(
        t,
        "--init-from-queries",
        action=argparse.BooleanOptionalAction,
        default_of=lambda: _train_default("init_from_queries"),
        help="NetVLAD's k-means on the queries too, not the database alone (default {default})",
    )
    for flag, field, typ, help_ in _TRAIN_OPTIONS:
        add_option(
            t, flag, dest=field, type=typ, default_of=lambda f=field: _train_default(f), help=help_
        )
    p.set_defaults(func=cmd_train)


# -- eval -------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from ..core.preload import load_engine

    load_engine()  # torch and torchvision, the collector paused: 0.6-0.9 s less
    from ..core.model.features import resolve_device
    from ..core.training.datasets import eval_set, load_spec
    from ..core.training.evaluate import compare, evaluate_model

    if args.verify and args.compare:
        raise CliError("--verify measures one model: leave out --compare")
    if args.sequence is not None and args.compare:
        raise CliError("--sequence measures one model: leave out --compare")
    sequence = None
    if args.sequence is not None:  # the range is SequenceConfig's, checked before any photo
        sequence = SequenceConfig(eval_group=args.sequence).validate()
    data = _data_spec(args)
    ps = load_spec(data)
    default = "test" if args.split_fractions else data.default_split()
    split = _split_config(args) or SplitConfig(fractions=data.default_fractions())
    ps, note = eval_set(ps, args.split, split, default)
    if note:
        print(f"netvlad eval: {note}", file=sys.stderr)
    from ..core.model.resolve import resolve_model

    ecfg = extract_cfg(args)
    init_cfg = InitConfig(num_images=args.init_images) if args.init_images else InitConfig()
    model = resolve_model(args.model, args.backbone_weights, args.num_clusters)
    model = model.to(resolve_device(ecfg.device))
    bars: dict = {}

    def progress(name: str, done: int, total: int) -> None:
        if args.quiet:
            return
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = progress_bar(total, name)
        update_bar(bar, done, total)

    try:
        if args.compare:
            results = compare(
                model,
                ps,
                ecfg,
                backbone_weights=args.backbone_weights,
                init_cfg=init_cfg,
                progress=progress,
            )
        else:
            name = model.config.name
            results = {
                name: evaluate_model(
                    model,
                    ps,
                    ecfg,
                    init_cfg=init_cfg,
                    progress=lambda d, t: progress(name, d, t),
                    verify=VerifyConfig() if args.verify else None,
                    sequence=sequence,
                )
            }
    finally:
        for bar in bars.values():
            bar.close()
    if args.json:
        if args.compare:
            print(
                json.dumps(
                    {"set": ps.describe(), "models": {k: r.to_json() for k, r in results.items()}}
                )
            )
        else:
            print(json.dumps(next(iter(results.values())).to_json()))
        return 0
    desc = ps.describe()
    print(
        f"set       {desc['name']}: {desc['database']} database, {desc['queries']} queries "
        f"(truth by {desc['truth']})"
    )
    print(f"{'model':34} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'R@20':>6}")
    for name, r in results.items():
        cells = " ".join(f"{100 * r.recalls[n]:5.1f}%" for n in (1, 5, 10, 20))
        print(f"{name:34} {cells}")
        if r.verified is not None:
            cells = " ".join(f"{100 * r.verified[n]:5.1f}%" for n in (1, 5, 10, 20))
            print(f"{'  + geometric verification':34} {cells}")
        if r.sequence is not None:
            s = r.sequence
            cells = " ".join(f"{100 * s.recalls[n]:5.1f}%" for n in (1, 5, 10, 20))
            print(f"{f'  + in groups of {s.n} ({s.order})':34} {cells}")
            print(f"{'':34} {s.decided} of {r.queries} decided with neighbours, {s.changed} moved")
    first = next(iter(results.values()))
    if first.no_positive or first.failed:
        print(
            f"note      {first.no_positive} queries have no correct reference; "
            f"{first.failed} unreadable queries left out"
        )
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="Recall@1/5/10/20 of a model on a set (or --compare f_max, off-the-shelf, trained)",
        description="Recall@N: a query is correct when one of its top N references lies within "
        f"{RECALL_RADIUS_M:g} m (or is listed in --gt). Exact search.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_model_args(
        p,
        "a checkpoint, a run folder, a named model or BACKBONE-POOLING",
        "backbone weights (default: the shipped ones)",
    )
    p.add_argument(
        "--num-clusters",
        type=int,
        help=f"K of an untrained BACKBONE-netvlad model (default {ModelConfig.num_clusters})",
    )
    _add_source_args(p, gt=True)
    p.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        help="which split to measure (default: test for --data or with --split-fractions, else "
        "all; a --data folder too small for a test split is measured all, leave-one-out)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also measure f_max and NetVLAD off the shelf on the same backbone",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also Recall@N after re-ranking each query's top "
        f"{VerifyConfig.top_k} by geometric verification, as `netvlad locate` does",
    )
    lo, hi = SEQUENCE_GROUP_RANGE
    p.add_argument(
        "--sequence",
        type=int,
        nargs="?",
        const=SequenceConfig.eval_group,
        metavar="N",
        help="also Recall@N of the queries located together in groups of N consecutive photos "
        "(capture time, else file name order), as `netvlad locate --sequence` does; needs the "
        f"database's positions (GPS or --frame-spacing-m). N from {lo} to {hi}, 1 = each photo "
        f"alone (default {SequenceConfig.eval_group})",
    )
    p.add_argument(
        "--init-images",
        type=int,
        help=f"images sampled for an untrained NetVLAD's k-means (default {InitConfig.num_images})",
    )
    add_runtime_args(p)
    p.set_defaults(func=cmd_eval)


def add_train_commands(subparsers) -> None:
    """Register ``train`` and ``eval`` on the CLI's subparsers."""
    _add_train(subparsers)
    _add_eval(subparsers)
