"""What every group of commands shares: runtime flags, the ExtractConfig they make, progress bars,
plain-text output and help texts whose defaults come from the config dataclasses."""

from __future__ import annotations

import argparse
import codecs
import io
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from ..core.config import DEFAULT_MODEL, DEVICES, PRECISIONS, RUNTIMES, ExtractConfig

#: Progress bars show no rate (img/s) until this many items are done: the first ones include
#: loading the model and say nothing about the speed.
RATE_AFTER = 8
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"


class CliError(Exception):
    """A usage failure of the CLI itself (not core's), reported as one line, exit code 1."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Fills ``{default}`` in a help text from the action's ``default_of()`` when help is shown.

    The defaults live in the config dataclasses; some of them (training's) sit in modules that
    import torch, which a plain ``netvlad models`` should not pay for, so they are read lazily.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        get = getattr(action, "default_of", None)
        if get is not None and "{default}" in text:
            text = text.replace("{default}", str(get()).replace("%", "%%"))
        return text


def add_option(
    parser, *flags: str, default_of: Callable[[], Any] | None = None, **kwargs
) -> argparse.Action:
    """``add_argument`` whose help may say ``{default}``, read from ``default_of()`` on --help."""
    action = parser.add_argument(*flags, **kwargs)
    action.default_of = default_of  # type: ignore[attr-defined]
    return action


def add_runtime_args(p: argparse.ArgumentParser, *, jpeg_draft: bool = True) -> None:
    """The flags that say how images reach the model, and --quiet; see ``extract_cfg``."""
    p.add_argument("--device", choices=DEVICES, help=f"default {ExtractConfig.device}")
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"images per forward pass (default {ExtractConfig.batch_size})",
    )
    p.add_argument(
        "--workers",
        type=int,
        help=f"image decoding threads (default {ExtractConfig.num_workers})",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help=f"longer side in pixels (default {ExtractConfig.image_size})",
    )
    if jpeg_draft:
        p.add_argument(
            "--jpeg-draft",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="decode JPEGs at least twice the input size at 1/2-1/8 scale (never under twice "
            "the input size) first: 4-5x faster "
            "decoding of 8 MP photos, descriptors within cosine 0.998 of a full decode; "
            "--no-jpeg-draft decodes in full "
            f"(default {'on' if ExtractConfig.jpeg_draft else 'off'})",
        )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="the backbone's arithmetic (pooling stays fp32): auto is bf16 where the CPU "
        "(AVX-512 BF16, AMX) or GPU has it natively, else fp32 "
        f"(default {ExtractConfig.precision}; `netvlad info` says which is used)",
    )
    p.add_argument(
        "--runtime",
        choices=list(RUNTIMES),
        help="what runs the network: auto picks per job and machine (ONNX Runtime in fp32 on "
        "CPUs, no torch import; torch on GPUs and for long bf16 jobs on heavy backbones; "
        "`netvlad info` says which and why), torch (the reference) or onnxruntime "
        f"(default {ExtractConfig.runtime})",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def extract_cfg(args: argparse.Namespace) -> ExtractConfig:
    """The ExtractConfig the runtime flags ask for (unset flags keep the dataclass's defaults)."""
    return ExtractConfig.from_options(
        device=getattr(args, "device", None),
        image_size=getattr(args, "image_size", None),
        batch_size=getattr(args, "batch_size", None),
        num_workers=getattr(args, "workers", None),
        jpeg_draft=getattr(args, "jpeg_draft", None),
        precision=getattr(args, "precision", None),
        runtime=getattr(args, "runtime", None),
    )


def index_dir(args: argparse.Namespace):
    """The index folder ``--library DIR`` or ``--index DIR`` names."""
    from ..core.library.status import resolve_index_dir

    if not (args.index or args.library):
        raise CliError("say which index to use: --library DIR or --index DIR")
    return resolve_index_dir(args.library, args.index)


def add_model_args(p: argparse.ArgumentParser, model_help: str, weights_help: str) -> None:
    p.add_argument("--model", help=f"{model_help} (default {DEFAULT_MODEL})")
    p.add_argument("--backbone-weights", metavar="FILE|none", help=weights_help)


def progress_bar(total: int | None = None, desc: str = "", unit: str = "img", **kw) -> tqdm:
    """A tqdm bar on stderr (stdout is for results) that shows a rate only once it means much."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        bar_format=_BAR_FORMAT,
        **kw,
    )


def update_bar(bar: tqdm, done: int, total: int | None = None) -> None:
    if total is not None:
        bar.total = total
    bar.n = done
    if done >= RATE_AFTER and bar.bar_format == _BAR_FORMAT:
        bar.bar_format = None  # tqdm's default: with the rate and the time left
    bar.refresh()


def stage_label(stage: str) -> str | None:
    """How the CLI names a stage on its progress line where its own name says too little."""
    from ..core.model.graphs import PREPARE, PREPARE_LABEL

    return PREPARE_LABEL if stage == PREPARE else None


class StageBar:
    """One tqdm bar per stage (scan, model, init, extract…), on stderr."""

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
            self.bar = progress_bar(total, stage_label(stage) or stage)
        if self.bar is not None:
            update_bar(self.bar, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StageNotice:
    """A line on stderr when a labelled stage starts (``locate`` has no bars for one photo)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __call__(self, stage: str, done: int, total: int) -> None:
        label = stage_label(stage) if self.enabled and done == 0 else None
        if label:
            print(f"netvlad: {label}…", file=sys.stderr, flush=True)


def plain(text: object) -> str:
    """A file name (or any text) on one line of plain output: control characters escaped."""
    s = str(text)
    if s.isprintable():
        return s
    # a name that is not UTF-8 on disk (surrogate escapes): shown with replacement characters
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


#: ASCII for the characters the CLI prints itself, where the output cannot encode them.
_STAND_INS = {
    "±": "+/-",
    "…": "...",
    "–": "-",
    "—": "-",
    "·": "-",
    "×": "x",
    "°": " deg",
    "→": "->",
    "≤": "<=",
    "≥": ">=",
    "‘": "'",
    "’": "'",
    "“": '"',
    "”": '"',
}


def _stand_in(err: UnicodeError) -> tuple[str, int]:
    """An encoding error handler: each character the output cannot hold becomes its ASCII
    stand-in ("±" -> "+/-"), its letter without accents ("é" -> "e"), else "?"."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    out = []
    for c in err.object[err.start : err.end]:
        alt = _STAND_INS.get(c)
        if alt is None:
            alt = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode() or "?"
        out.append(alt)
    return "".join(out), err.end


codecs.register_error("netvlad-stand-in", _stand_in)


def survive_any_encoding() -> None:
    """Let stdout and stderr print whatever the CLI says, whatever their encoding.

    Under ``PYTHONIOENCODING=ascii``, a C locale or a cp1252 console, the "±" of every located
    result (and any accented file name) raised UnicodeEncodeError: an "internal error" after
    the work was done. Characters the stream cannot encode get a stand-in instead.
    """
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper) or stream.errors != "strict":
            continue
        try:
            utf = codecs.lookup(stream.encoding).name.startswith("utf")
        except LookupError:
            utf = False
        if not utf:
            stream.reconfigure(errors="netvlad-stand-in")
