"""`netvlad locate`: photos, folders and videos through the engine's locate session.

Photos are located one by one (``--sequence``: together, in capture order, split into trips);
a video is always a sequence of frames (``--every``), named ``clip.mp4@00:12.0``. Only each
photo's final stage is printed: a script wants answers, not the provisional steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..core.config import LocateConfig, SequenceConfig, VerifyConfig
from ..core.photos.geo import format_distance
from .common import StageNotice, extract_cfg, index_dir, plain, progress_bar, update_bar


def cmd_locate(args) -> int:
    """One result per named photo (and per sampled frame); exit 1 when none could be located."""
    from ..core.errors import LibraryIndexError
    from ..core.photos.images import expand_inputs
    from ..core.query.result import LocateResult
    from ..core.query.session import open_session

    verify = VerifyConfig(enabled=args.verify, top_k=args.verify_top)
    locate_cfg = LocateConfig(top_n=args.top, verify=verify)
    seq = SequenceConfig(every_s=args.every).validate()
    # torch loads only if it runs the model, or to export its graph once (said on stderr)
    status, session = open_session(
        index_dir(args), extract_cfg(args), locate_cfg, progress=StageNotice(not args.quiet)
    )
    if session is None:
        raise LibraryIndexError(status.why_not())
    from ..core.library.status import not_searchable_note

    for note in [*status.notes, not_searchable_note(status)]:  # before the answers
        if note:
            print(f"note: {plain(note)}", file=sys.stderr)
    inputs = expand_inputs(args.photos)
    # Inputs that are no photo get a result that says why: the same reasons the GUI shows.
    results = [LocateResult(query=str(p), error=reason) for p, reason in inputs.skipped]
    for res in results:
        _print_result(res, args.json)
    photos_together = seq if args.sequence else None
    try:
        if inputs.photos:
            results += _locate(session, inputs.photos, photos_together, args)
        for video in inputs.videos:
            results += _locate_video(session, video, None if args.sequence is False else seq, args)
    finally:
        session.close()
    _export(args, results)
    return 1 if all(r.error for r in results) else 0


def _locate(session, items, seq: SequenceConfig | None, args) -> list:
    """The final results of ``items`` (photos, or a video's frames), printed as they come."""
    out = []
    bar = progress_bar(len(items), "locate", "photo") if not args.quiet and len(items) > 1 else None
    try:
        for n, (_, res) in enumerate(
            ((i, r) for i, r in session.run(items, sequence=seq) if r.final), 1
        ):
            out.append(res)
            _print_result(res, args.json)
            if bar is not None:
                update_bar(bar, n)
    finally:
        if bar is not None:
            bar.close()
    if seq is not None and session.ordering is not None and not args.json:
        _print_ordering(session.ordering)
    return out


def _locate_video(session, video: Path, seq: SequenceConfig | None, args) -> list:
    """A video's frames every ``--every`` seconds, located as a sequence; a video that cannot
    be read gives one result that says why (a truncated one: its frames, then a warning)."""
    from ..core.photos.video import VideoError, VideoTruncated, save_frames
    from ..core.query.result import LocateResult

    with tempfile.TemporaryDirectory(prefix="netvlad-frames-") as tmp:
        frames, problem = [], ""
        try:
            # extend keeps the frames read before a truncated video's end raises
            frames.extend(save_frames(video, tmp, extract_cfg(args), args.every))
        except VideoTruncated as exc:
            problem = f"{video.name}: {exc}; locating the {len(frames)} frames before it"
        except VideoError as exc:
            res = LocateResult(query=str(video), error=str(exc))
            _print_result(res, args.json)
            return [res]
        if problem:
            print(f"warning: {plain(problem)}", file=sys.stderr)
        if not args.quiet and not args.json:
            print(
                f"{plain(video)}: {len(frames)} frames, one every {args.every:g} s", file=sys.stderr
            )
        return _locate(session, frames, seq, args)


def _print_ordering(ordering) -> None:
    """How the photos were ordered and where they were split (stderr: stdout is results)."""
    print(f"sequence: {ordering.describe()}", file=sys.stderr)
    for why in ordering.splits:
        print(f"  split: {plain(why)}", file=sys.stderr)


def _export(args, results) -> None:
    """--csv and --geojson: the files the GUI's File → Export writes, by the same core writer."""
    from ..core.query.export import write_csv, write_geojson

    for path, write in ((args.csv, write_csv), (args.geojson, write_geojson)):
        if path:
            written = write(results, path)
            if not args.json:
                print(f"exported {len(results)} results to {plain(written)}", file=sys.stderr)


def _export_path(text: str) -> Path:
    """An export file whose folder exists: a typo is refused before the photos are located."""
    path = Path(text).expanduser()
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {path.parent} to write {path.name} in")
    return path


def _seconds(text: str) -> float:
    """``--every``: "1s", "0.5", "2.5s", "500ms"."""
    t = text.strip().lower()
    scale = 1.0
    if t.endswith("ms"):
        t, scale = t[:-2], 0.001
    elif t.endswith("s"):
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (e.g. 1s, 0.5s, 500ms)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 s, not {text!r}")
    return value


def _print_result(res, as_json: bool) -> None:
    if as_json:
        print(json.dumps(res.to_json(evidence=True)), flush=True)
        return
    print(plain(res.query))
    if res.error:
        print(f"  cannot locate: {plain(res.error)}")
        return
    from ..core.query import wording

    how = "verified" if res.verified else "not verified"
    print(f"  verdict    {wording.headline(res)} ({how})")
    if res.verdict_reason:  # core/query/verdict.py words why
        print(f"  why        {plain(res.verdict_reason)}")
    kind = wording.coordinates_kind(res)
    if kind == wording.NO_PLACE:
        print("  no match with GPS")
    elif kind == wording.GUESS:
        # A nearest neighbour always exists: show it as what it is, at street precision only.
        print(f"  guess      {res.lat:.3f}, {res.lon:.3f}  (the nearest match, not a location)")
    else:
        print(
            f"  location   {res.lat:.6f}, {res.lon:.6f}  ±{format_distance(res.radius_m, 0)}  "
            f"confidence {res.confidence:.2f}"
        )
    if res.sequence is not None:
        s = res.sequence
        print(f"  sequence   trip {s.id}, photo {s.index + 1}: {s.support} neighbours agree")
    if res.error_m is not None:
        print(f"  error      {format_distance(res.error_m)} from the photo's own GPS")
    for m in res.matches:
        dist = f"{format_distance(m.distance_m):>9}" if m.distance_m is not None else "   no GPS"
        inl = f"{m.inliers:>4} inliers" if m.inliers is not None else ""
        print(f"  #{m.rank:<2} {m.score:.3f} {dist}  {plain(m.path)}  {inl}".rstrip())
    sys.stdout.flush()


def add_locate_command(sub, add_index_choice) -> None:
    """Register ``locate`` on the CLI's subparsers (its index choice shared with the others)."""
    from .common import DefaultsHelpFormatter, add_runtime_args

    p = sub.add_parser(
        "locate",
        help="tell where photos (or a video's frames) were taken",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("photos", nargs="+", help="photos, folders or videos")
    add_index_choice(p, required=True)
    p.add_argument(
        "--top",
        type=int,
        default=LocateConfig.top_n,
        help=f"matches per photo (default {LocateConfig.top_n})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per photo")
    p.add_argument(
        "--csv", metavar="FILE", type=_export_path, help="also write the results to a CSV file"
    )
    p.add_argument(
        "--geojson",
        metavar="FILE",
        type=_export_path,
        help="also write the results to a GeoJSON file (photos not found have no geometry)",
    )
    v = VerifyConfig()
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=v.enabled,
        help="check the top matches geometrically (local features + MAGSAC) and say whether "
        f"the photo is in the library at all (default {'on' if v.enabled else 'off'})",
    )
    p.add_argument(
        "--verify-top",
        type=int,
        default=v.top_k,
        metavar="K",
        help=f"matches verified per photo (default {v.top_k})",
    )
    p.add_argument(
        "--sequence",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="locate the photos together, in capture order (EXIF time, else file name), split "
        "where one trip is impossible: photos taken one after another cannot be far apart. "
        "Videos are always sequences (--no-sequence: each frame alone); photos only with "
        "--sequence",
    )
    p.add_argument(
        "--every",
        type=_seconds,
        default=SequenceConfig.every_s,
        metavar="TIME",
        help=f"a video's frames: one every TIME (e.g. 1s, 0.5s; default {SequenceConfig.every_s:g}s)",
    )
    add_runtime_args(p)
    p.set_defaults(func=cmd_locate)
