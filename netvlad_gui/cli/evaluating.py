"""`netvlad eval`: Recall@N of a model on a set, optionally verified, in sequences, or compared
with f_max and NetVLAD off the shelf; a thin shell over netvlad_gui.core.training.evaluate."""

from __future__ import annotations

import json
import sys

from ..core.config import (
    RECALL_RADIUS_M,
    SEQUENCE_GROUP_RANGE,
    InitConfig,
    ModelConfig,
    SequenceConfig,
    VerifyConfig,
)
from ..core.trainconfig import SplitConfig
from .common import (
    CliError,
    DefaultsHelpFormatter,
    add_model_args,
    add_runtime_args,
    extract_cfg,
    progress_bar,
    update_bar,
)
from .datasource import add_source_args, data_spec, split_config


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
    data = data_spec(args)
    ps = load_spec(data)
    default = "test" if args.split_fractions else data.default_split()
    split = split_config(args) or SplitConfig(fractions=data.default_fractions())
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


def add_eval_command(sub) -> None:
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
    add_source_args(p, gt=True)
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
