"""`netvlad`: the headless front end. Every command is a thin shell over netvlad_gui.core.

Modules: ``common`` (runtime flags, the ExtractConfig they make, progress bars), ``library``
(index, locate, info, models, import) and ``training`` (train, eval). Errors: core's
`NetvladError` and the file system's OSError are the user's to fix and print as one line
(exit 1); anything else is a bug, printed as one line with the path of a log holding the
traceback (exit 1); ``--verbose`` raises it instead. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from ..core.errors import NetvladError
from .common import CliError, extract_cfg, survive_any_encoding

__all__ = ["CliError", "build_parser", "extract_cfg", "main"]

log = logging.getLogger("netvlad")


def build_parser() -> argparse.ArgumentParser:
    from .library import add_library_commands
    from .training import add_train_commands

    ap = argparse.ArgumentParser(prog="netvlad", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--verbose", "-v", action="store_true", help="log more, and raise errors (tracebacks)"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    add_library_commands(sub)
    add_train_commands(sub)
    return ap


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _write_crash_log(exc: BaseException) -> Path | None:
    """The traceback of an unexpected error, in the user's log folder (else a temp file)."""
    import tempfile
    import time

    text = "".join(traceback.format_exception(exc))
    name = time.strftime("crash-%Y%m%d-%H%M%S.log")
    try:
        import platformdirs

        from ..core.paths import APP_NAME

        folder = Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(f"netvlad {' '.join(sys.argv[1:])}\n{text}", encoding="utf-8")
        return path
    except OSError:
        pass
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="netvlad-crash-", suffix=".log", delete=False, encoding="utf-8"
        ) as f:
            f.write(text)
        return Path(f.name)
    except OSError:
        return None


def run() -> NoReturn:
    """The ``netvlad`` command: :func:`main`, then exit with its code.

    Before the interpreter tears down, every object it holds is taken out of the garbage
    collector's reach (``gc.freeze``): its final collection would walk all that torch and
    torchvision created, ~1 s at the end of every command that described a photo here, for a
    process that is ending anyway (benchmarks/README.md, "Exit"). Files and the index are
    closed by then; ``atexit`` handlers still run.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    survive_any_encoding()
    args = build_parser().parse_args(argv)
    from ..core.model.runtime import tune_process

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
    except BrokenPipeError:  # `netvlad locate … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 141
    except (NetvladError, CliError, OSError) as exc:
        # OSError: the file system's word (permission denied, disk full…), the user's to fix.
        if args.verbose:
            raise
        print(f"netvlad: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            raise
        where = _write_crash_log(exc)
        details = f"; the traceback is in {where}" if where else ""
        print(
            f"netvlad: internal error (a bug, please report it): {type(exc).__name__}: "
            f"{_one_line(exc)}{details}",
            file=sys.stderr,
        )
        return 1
