"""The locate session: each photo's answer, stage by stage, for both fronts.

A photo is described once (one forward pass), searched once and its GPS read once; then its
answer is yielded as it firms up: the global search's (shown at once, provisional while a check
follows), then the verified one (final). The GUI's engine worker relays these stages and the CLI
prints the final ones, so neither decides anything: a result says whether it is final, what its
verdict is and why, and in which order its matches decided it.

``open_session`` opens an index folder for either front: the library's status and, when it can
be searched, a warm session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..config import ExtractConfig, LocateConfig
from ..library.index import LibraryIndex
from ..library.status import LibraryStatus, index_exists, library_status
from ..model.inference import StageProgress
from ..photos import geo
from ..photos.images import ImageLoadError
from .answer import Evidence, build_answer
from .locate import Locator
from .result import LocateResult

log = logging.getLogger(__name__)

CancelFn = Callable[[], bool]

#: Why a photo's answer rests on the global search alone although verification is on.
STOPPED_BEFORE_CHECK = "stopped before the geometric check: the global search alone"


class LocateSession:
    """Locates photos against one open library, each photo's stages from one description."""

    def __init__(self, locator: Locator, cfg: LocateConfig | None = None) -> None:
        self.locator = locator
        self.cfg = (cfg or locator.cfg).validate()

    @property
    def index(self) -> LibraryIndex:
        return self.locator.index

    def close(self) -> None:
        """Close the library's index (the session cannot locate afterwards)."""
        self.locator.index.close()

    def stages(
        self,
        path: str | os.PathLike,
        cfg: LocateConfig | None = None,
        *,
        cancel: CancelFn | None = None,
        strict: bool = False,
    ) -> Iterator[LocateResult]:
        """One photo's results in order, the last one final.

        With verification on: the global answer (``final`` False, no verdict), then the verified
        one. ``cancel`` turning true between them ends the photo with a final answer from the
        global search, which says so. A photo that cannot be read gives one final result with
        ``error`` (``strict``: raises ImageLoadError instead).
        """
        cfg = (cfg or self.cfg).validate()
        loc, vc = self.locator, cfg.verify
        verify = vc.enabled
        try:
            described = loc.describe(path, with_map=verify and vc.features == "patch")
        except ImageLoadError as exc:
            if strict:
                raise
            yield LocateResult(query=str(Path(path)), error=str(exc))
            return
        k = max(cfg.top_n, vc.top_k) if verify else cfg.top_n
        ev = Evidence(
            str(path),
            loc.search(described.descriptor, k),
            geo.read_gps(path),
            library_has_gps=loc.library_has_gps,
        )
        if not verify:
            yield build_answer(ev, loc.calibration, cfg, final=True)
            return
        yield build_answer(ev, loc.calibration, cfg, final=False)
        if cancel is not None and cancel():
            yield build_answer(ev, loc.calibration, cfg, final=True, reason=STOPPED_BEFORE_CHECK)
            return
        try:
            ev.checks = loc.verify(described, ev.hits, vc)
        except Exception as exc:  # the global answer stands, saying why
            log.warning("verifying %s failed", path, exc_info=True)
            reason = f"the geometric check failed ({exc}): the global search alone"
            yield build_answer(ev, loc.calibration, cfg, final=True, reason=reason)
            return
        yield build_answer(ev, loc.calibration, cfg, final=True)

    def locate(
        self,
        path: str | os.PathLike,
        cfg: LocateConfig | None = None,
        *,
        top_n: int | None = None,
        verify: bool | None = None,
        strict: bool = False,
    ) -> LocateResult:
        """The photo's final answer (a bad photo gives a result with ``error``; ``strict``
        raises ImageLoadError instead). ``top_n`` and ``verify`` override ``cfg``'s."""
        cfg = cfg or self.cfg
        if top_n is not None:
            cfg = dataclasses.replace(cfg, top_n=top_n)
        if verify is not None:
            cfg = dataclasses.replace(cfg, verify=dataclasses.replace(cfg.verify, enabled=verify))
        *_, final = self.stages(path, cfg, strict=strict)
        return final

    def run(
        self,
        paths: Sequence[str | os.PathLike],
        cfg: LocateConfig | None = None,
        *,
        cancel: CancelFn | None = None,
    ) -> Iterator[tuple[int, LocateResult]]:
        """(position in ``paths``, result) for every stage of every photo, photo after photo.

        ``cancel`` is checked between photos (the rest is not located) and between a photo's
        stages (its answer ends on the global search).
        """
        for i, path in enumerate(paths):
            if cancel is not None and cancel():
                return
            for res in self.stages(path, cfg, cancel=cancel):
                yield i, res


def open_session(
    index_dir: str | os.PathLike,
    extract_cfg: ExtractConfig | None = None,
    locate_cfg: LocateConfig | None = None,
    *,
    progress: StageProgress | None = None,
) -> tuple[LibraryStatus, LocateSession | None]:
    """Open an index folder: its status, and a session with the model and search index loaded
    (None when the library cannot be searched yet; ``status.problem`` says why).

    The session owns the open index: ``session.close()`` closes it. ``progress(stage, done,
    total)`` hears of the one-off "prepare" stage when the model's graph must be exported
    first (the model runs without torch afterwards).
    """
    index_dir = Path(index_dir)
    if not index_exists(index_dir):
        return LibraryStatus(index_dir=str(index_dir), problem="not indexed yet"), None
    index = LibraryIndex(index_dir)
    try:
        status = library_status(index)
        if not status.ready:
            index.close()
            return status, None
        locator = Locator(
            index,
            extract_cfg=extract_cfg,
            locate_cfg=locate_cfg or LocateConfig(),
            progress=progress,
        )
        index.faiss_index()  # load the search index now, not on the first photo
    except BaseException:
        index.close()
        raise
    return status, LocateSession(locator)
