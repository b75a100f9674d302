"""`netvlad train`: a thin shell over netvlad_gui.core.training.train (`netvlad eval` is in
evaluating.py).

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
    InitConfig,
    ModelConfig,
)
from ..core.trainconfig import (
    AMP_DTYPES,
    LOSSES,
    TRAIN_LAYERS,
)
from .common import (
    CliError,
    DefaultsHelpFormatter,
    add_model_args,
    add_option,
)
from .datasource import add_data_args, add_source_args, data_spec, split_config
from .evaluating import add_eval_command

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
    data, val = data_spec(args).absolute(), data_spec(args, "val_").absolute()
    if val.dbstruct and not val.image_root:
        val.image_root = data.image_root
    split = split_config(args)
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
    add_source_args(p, gt=True)
    v = p.add_argument_group("validation set (default: the val split of the training data)")
    add_data_args(v, prefix="val-")
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


def add_train_commands(subparsers) -> None:
    """Register ``train`` and ``eval`` on the CLI's subparsers."""
    _add_train(subparsers)
    add_eval_command(subparsers)
