"""The locate session: each photo's answer, stage by stage, for both fronts.

A photo is described once (one forward pass), searched once and its GPS read once; then its
answer is yielded as it firms up: the global search's (shown at once, provisional while a check
follows), then the verified one (final). Photos located as a sequence (a walk, a burst, a
video's frames) get one more stage: ordered by capture time and split into trips, each photo's
verified answer waits (provisional) until the photos around it are in, and its final answer is
decided with them (together.py). The GUI's engine worker relays these stages and the CLI prints
the final ones, so neither decides anything: a result says whether it is final, what its verdict
is and why, and in which order its matches decided it.

``open_session`` opens an index folder for either front: the library's status and, when it can
be searched, a warm session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ExtractConfig, LocateConfig, SequenceConfig
from ..library.index import LibraryIndex
from ..library.inputsize import size_note
from ..library.status import LibraryStatus, index_exists, library_status, not_searchable_note
from ..model.inference import StageProgress
from ..photos import geo
from ..photos.capture import Ordering, order_photos, read_capture_time
from ..photos.images import ImageLoadError, PhotoInput
from ..photos.light import measure_light
from .answer import Evidence, build_answer
from .locate import Locator
from .result import LocateResult
from .sequence import PhotoCandidates
from .together import References, candidates, decide_group, sequence_result
from .verdict import LOCATED

log = logging.getLogger(__name__)

CancelFn = Callable[[], bool]
Photo = str | os.PathLike | PhotoInput

#: Why a photo's answer rests on the global search alone although verification is on.
STOPPED_BEFORE_CHECK = "stopped before the geometric check: the global search alone"


@dataclass
class _Own:
    """A photo of a group with its own (final) answer, waiting for its neighbours."""

    position: int  # in the session's input
    answer: LocateResult
    candidates: PhotoCandidates
    descriptor: np.ndarray


class LocateSession:
    """Locates photos against one open library, each photo's stages from one description."""

    def __init__(
        self,
        locator: Locator,
        cfg: LocateConfig | None = None,
        status: LibraryStatus | None = None,
    ) -> None:
        self.locator = locator
        self.cfg = (cfg or locator.cfg).validate()
        self.status = status  # what open_session found: photos not searchable, notes
        self._references: References | None = None
        self.ordering: Ordering | None = None  # the last sequence run's order and trips

    def _noted(self, res: LocateResult, met_damage: bool = False) -> LocateResult:
        """A final answer other than "located" says which photos of the library were not
        searched: their place may be the one the search did not find. So does any answer
        whose search met a damaged stored descriptor (and left it out)."""
        note = not_searchable_note(self.status) if self.status is not None else ""
        if note and res.final and not res.error and (met_damage or res.verdict != LOCATED):
            res.verdict_reason = f"{res.verdict_reason}; {note}" if res.verdict_reason else note
        return res

    def _search(self, descriptor, k: int):
        """The search's hits, and whether it met damaged stored rows no search had met before
        (an approximate index meets them among its candidates; ``status`` counts them)."""
        before = len(self.index.damaged_ids)
        hits = self.locator.search(descriptor, k)
        after = len(self.index.damaged_ids)
        if after > before and self.status is not None:
            self.status.damaged = after
        return hits, after > before

    @property
    def index(self) -> LibraryIndex:
        return self.locator.index

    def close(self) -> None:
        """Close the library's index and its store of features (the session cannot locate
        afterwards)."""
        self.locator.close()

    def stages(
        self,
        path: Photo,
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
        yield from self._stages(_as_input(path), (cfg or self.cfg).validate(), cancel, strict)

    def locate(
        self,
        path: Photo,
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
        paths: Sequence[Photo],
        cfg: LocateConfig | None = None,
        *,
        cancel: CancelFn | None = None,
        sequence: SequenceConfig | None = None,
    ) -> Iterator[tuple[int, LocateResult]]:
        """(position in ``paths``, result) for every stage of every photo.

        Without ``sequence`` photo after photo, each alone. With it, in capture (else file)
        order, trip by trip (``self.ordering`` says which order and where it split), each photo
        of a trip ending on its sequence stage. ``cancel`` is checked between photos (the rest
        is not located; photos waiting for their neighbours are decided with those in) and
        between a photo's stages (its answer ends on the global search).
        """
        cfg = (cfg or self.cfg).validate()
        items = [_as_input(p) for p in paths]
        if sequence is None or not sequence.enabled or len(items) < 2:
            self.ordering = None
            for i, item in enumerate(items):
                if cancel is not None and cancel():
                    return
                for res in self._stages(item, cfg, cancel, False):
                    yield i, res
            return
        sequence = sequence.validate()
        truths = [geo.read_gps(it.path) for it in items]
        times = [it.time_s if it.time_s is not None else read_capture_time(it.path) for it in items]
        gps = [t.point if t.ok else None for t in truths]
        self.ordering = order_photos([it.label for it in items], times, gps, sequence)
        secs = self.ordering.times
        for group_id, group in enumerate(self.ordering.groups, 1):
            if cancel is not None and cancel():
                return
            yield from self._group(group_id, group, items, truths, secs, cfg, sequence, cancel)

    # ---- one photo -----------------------------------------------------------------------

    def _stages(
        self,
        item: PhotoInput,
        cfg: LocateConfig,
        cancel: CancelFn | None,
        strict: bool,
        *,
        truth: geo.GpsResult | None = None,
        keep: list | None = None,
        extra_k: int = 0,
    ) -> Iterator[LocateResult]:
        """The photo's stages. With ``keep`` (a list), the verified stage is yielded as
        provisional (a sequence stage follows) and (Evidence, final answer, descriptor) is
        appended to ``keep``."""
        loc, vc = self.locator, cfg.verify
        verify = vc.enabled
        try:
            described = loc.describe(item.path, with_map=verify and vc.features == "patch")
        except ImageLoadError as exc:
            if strict:
                raise
            yield LocateResult(query=item.label, error=str(exc))
            return
        k = max(cfg.top_n, vc.top_k if verify else 0, extra_k)
        hits, met = self._search(described.descriptor, k)
        gps = truth if truth is not None else geo.read_gps(item.path)
        ev = Evidence(
            item.label,
            hits,
            gps,
            library_has_gps=loc.library_has_gps,
            light=measure_light(described.image),
        )

        def answer(reason: str = "") -> LocateResult:
            res = build_answer(ev, loc.calibration, cfg, final=True, reason=reason)
            return self._noted(res, met)

        if verify:
            yield build_answer(ev, loc.calibration, cfg, final=False)
            if cancel is not None and cancel():
                yield answer(STOPPED_BEFORE_CHECK)
                return
            try:
                ev.checks = loc.verify(described, ev.hits, vc)
            except Exception as exc:  # the global answer stands, saying why
                log.warning("verifying %s failed", item.path, exc_info=True)
                yield answer(f"the geometric check failed ({exc}): the global search alone")
                return
        final = answer()
        if keep is None:
            yield final
            return
        keep.append((ev, final, described.descriptor))
        yield dataclasses.replace(final, final=False, verdict=None, verdict_reason="")

    # ---- a trip located together ---------------------------------------------------------

    def _group(
        self,
        group_id: int,
        group: list[int],
        items: list[PhotoInput],
        truths: list[geo.GpsResult],
        secs: list[float | None],
        cfg: LocateConfig,
        seq: SequenceConfig,
        cancel: CancelFn | None,
    ) -> Iterator[tuple[int, LocateResult]]:
        """One trip's photos in order; each photo's final stage once the ``window - 1`` photos
        after it are in (all of them at the trip's end, or on Stop): decided with half a window
        after it, day_left's night groups of 10 lost 2 points (benchmarks/README "Sequences")."""
        if len(group) < 2:  # a photo alone is located exactly as without a sequence
            (i,) = group
            for res in self._stages(items[i], cfg, cancel, False, truth=truths[i]):
                yield i, res
            return
        if self._references is None:
            self._references = References(self.locator.index)
        own: list[_Own] = []
        decided = 0  # own[:decided] have had their final stage
        for i in group:
            if cancel is not None and cancel():
                break
            kept: list = []
            stages = self._stages(
                items[i], cfg, cancel, False, truth=truths[i], keep=kept, extra_k=seq.candidates
            )
            for res in stages:
                yield i, res
            if kept:
                ev, answer, descriptor = kept[0]
                cand = candidates(ev, descriptor, secs[i], items[i].label)
                own.append(_Own(i, answer, cand, descriptor))
                ready = len(own) - (seq.window - 1)
                if ready > decided:
                    yield from self._decide(group_id, own, decided, ready, cfg, seq)
                    decided = ready
        if len(own) > decided:
            yield from self._decide(group_id, own, decided, len(own), cfg, seq)

    def _decide(
        self,
        group_id: int,
        own: list[_Own],
        start: int,
        stop: int,
        cfg: LocateConfig,
        seq: SequenceConfig,
    ) -> Iterator[tuple[int, LocateResult]]:
        """Final stages of ``own[start:stop]``, decided with up to a window of photos on each
        side (the photos before, for context, and all those in after)."""
        lo = max(0, start - seq.window)
        try:
            outcomes = decide_group([o.candidates for o in own[lo:]], self._references, seq)
        except Exception:  # a bug in the track must not cost the photos their own answers
            log.warning(
                "locating a sequence failed; its photos keep their own answers", exc_info=True
            )
            outcomes = None
        for j in range(start, stop):
            o = own[j]
            if outcomes is None:
                yield o.position, o.answer
                continue
            outcome = dataclasses.replace(outcomes[j - lo], index=j)
            yield (
                o.position,
                sequence_result(o.answer, outcome, group_id, o.descriptor, self._references, cfg),
            )


def _as_input(path: Photo) -> PhotoInput:
    return path if isinstance(path, PhotoInput) else PhotoInput(Path(path))


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
        status.lost = index.store().lost  # rows a truncated store no longer holds
        if note := size_note(index.image_size, extract_cfg or locator.extract_cfg):
            status.notes.append(note)
        status.damaged = len(index.damaged_ids)  # an exact search checked every row
    except BaseException:
        index.close()
        raise
    return status, LocateSession(locator, status=status)
