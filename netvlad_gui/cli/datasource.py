"""The data-source options `netvlad train` and `netvlad eval` share (a geotagged folder, a
database/queries pair, a dbStruct; a split), and the DataSpec and SplitConfig they give."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.trainconfig import NO_SPLIT, PAIR_HOLDOUT, SPLIT_METHODS, DataSpec, SplitConfig
from .common import CliError, add_option


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


def add_data_args(group, *, prefix: str = "", gt: bool = True) -> None:
    for name, kwargs in _SOURCE_OPTIONS:
        if name == "gt" and not gt:
            continue
        group.add_argument(f"--{prefix}{name}", **kwargs)


def add_source_args(p: argparse.ArgumentParser, *, gt: bool) -> None:
    g = p.add_argument_group("data (one of --data, --database/--queries, --dbstruct)")
    add_data_args(g, gt=gt)
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


def data_spec(args, prefix: str = "") -> DataSpec:
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


def split_config(args):
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
