"""The track model of core/query/sequence.py: forward-backward over pairs of places.

A state is a pair of places (the previous photo's and this one's), so that the model carries
a velocity; a step from pair (i, j) to pair (j, k) costs how far k lies from the straight-on
place j + (j - i) * (time ratio), over ``jitter_m``. Everything is flat index arrays over the
pairs within reach and the triples (i, j, k) they chain into, so that a window costs
O(places x neighbours^2) per photo, not O(places^3). See sequence.py for why this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import SequenceConfig

#: The most neighbours each place may step to: it bounds the work per photo.
MAX_NEIGHBOURS = 24


@dataclass
class Window:
    """What the track model needs of one window of photos, all in arrays."""

    rows: np.ndarray  # (u,) reference rows in play
    xy: np.ndarray  # (u, 2) local metres
    emit: np.ndarray  # (w, u) log-likelihood of each place per photo
    dt: np.ndarray | None  # (w-1,) seconds between consecutive photos; None in file order


def step_reach(cfg: SequenceConfig, dt: np.ndarray | None) -> np.ndarray:
    """The farthest a track may step between consecutive photos, per step (metres)."""
    if dt is None:
        return np.array([cfg.untimed_step_m])
    return cfg.speed_mps * dt + cfg.jitter_m + cfg.min_step_m


def _seg_lse(values: np.ndarray, starts: np.ndarray, size: int, segs: np.ndarray) -> np.ndarray:
    """log-sum-exp of ``values`` over the consecutive segments beginning at ``starts``; the
    result lands at ``segs`` (the segment ids) of an array of ``size``, -inf elsewhere."""
    out = np.full(size, -np.inf)
    if not len(values):
        return out
    m = np.maximum.reduceat(values, starts)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    counts = np.diff(np.append(starts, len(values)))
    s = np.add.reduceat(np.exp(values - np.repeat(m_safe, counts)), starts)
    with np.errstate(divide="ignore"):
        out[segs] = m_safe + np.log(s)
    return out


def _lse(values: np.ndarray) -> float:
    m = np.max(values) if len(values) else -np.inf
    if not np.isfinite(m):
        return -np.inf
    return float(m + np.log(np.sum(np.exp(values - m))))


class _Graph:
    """Pairs of places (a step) and pairs of steps (a triple), as flat index arrays."""

    def __init__(self, xy: np.ndarray, reach: float) -> None:
        u = len(xy)
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
        nearest = np.argsort(d, axis=1, kind="stable")[:, : MAX_NEIGHBOURS + 1]
        a = np.repeat(np.arange(u), nearest.shape[1])
        b = nearest.reshape(-1)
        ok = d[a, b] <= reach
        self.a, self.b = a[ok], b[ok]  # sorted by a
        self.length = d[self.a, self.b]
        self.u, self.n = u, len(self.a)
        start = np.searchsorted(self.a, np.arange(u))
        end = np.searchsorted(self.a, np.arange(u), side="right")
        counts = (end - start)[self.b]  # successors of each pair = pairs leaving its end
        self.t1 = np.repeat(np.arange(self.n), counts)
        offsets = np.arange(len(self.t1)) - np.repeat(np.cumsum(counts) - counts, counts)
        self.t2 = np.repeat(start[self.b], counts) + offsets
        # Grouping of triples by their first pair (as built) and by their second pair.
        self.t1_starts, self.t1_segs = _segments(self.t1)
        self.by_t2 = np.argsort(self.t2, kind="stable")
        self.t2_starts, self.t2_segs = _segments(self.t2[self.by_t2])
        # The straight-on error |next step - ratio * last step|^2 of each triple, expanded so
        # that any ratio costs three numbers per triple: |A|^2 - 2 r A.B + r^2 |B|^2.
        i, j, k = self.a[self.t1], self.b[self.t1], self.b[self.t2]
        step_a, step_b = xy[k] - xy[j], xy[j] - xy[i]
        self._aa = (step_a**2).sum(-1)
        self._ab = (step_a * step_b).sum(-1)
        self._bb = (step_b**2).sum(-1)
        self.indeg = np.bincount(self.b, minlength=u)

    def turn_cost(self, ratio: float, jitter: float) -> np.ndarray:
        """-(distance from the straight-on place)^2 / (2 jitter^2), per triple."""
        err = self._aa - 2.0 * ratio * self._ab + ratio * ratio * self._bb
        return err * (-0.5 / jitter**2)


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, keys[starts]


class Model:
    """The track model over one window's places: the graph of steps and the step costs."""

    def __init__(self, window: Window, cfg: SequenceConfig) -> None:
        self.cfg = cfg
        self.g = g = _Graph(window.xy, float(step_reach(cfg, window.dt).max()))
        self.stay = np.where(g.length < cfg.min_step_m, -cfg.stay_penalty, 0.0)
        self.log_keep, self.log_restart = math.log1p(-cfg.restart), math.log(cfg.restart)
        # A restart (and the first photo) lands on a place uniformly, from any of its neighbours.
        with np.errstate(divide="ignore"):
            self.land = -np.log(g.indeg[g.b].astype(np.float64)) - math.log(g.u)
        self._made: dict[tuple[float, float], np.ndarray] = {}
        self._masks: dict[float, np.ndarray] = {}

    def mask(self, reach: float) -> np.ndarray:
        """0 for the pairs a track may step along, -inf for the rest, plus the stay cost."""
        if reach not in self._masks:
            self._masks[reach] = np.where(self.g.length <= reach, 0.0, -np.inf) + self.stay
        return self._masks[reach]

    def transition(self, ratio: float, reach: float) -> np.ndarray:
        """log P(triple) for a step of ``reach`` at most, ``ratio`` times as long in time as
        the step before, normalised over the places reachable from each pair."""
        key = (ratio, reach)
        if key not in self._made:  # in file order every step is the same
            g = self.g
            cost = g.turn_cost(ratio, self.cfg.jitter_m) + self.mask(reach)[g.t2]
            self._made[key] = cost - _seg_lse(cost, g.t1_starts, g.n, g.t1_segs)[g.t1]
        return self._made[key]

    def steps(self, dt: np.ndarray | None, w: int) -> list[tuple[float, float]]:
        """(time ratio, reach) of the step into each photo of a window of ``w``."""
        reach = step_reach(self.cfg, dt)
        out = []
        for s in range(w):
            r = float(reach[min(max(s - 1, 0), len(reach) - 1)])
            ratio = 1.0
            if dt is not None and s >= 2 and dt[s - 2] > 0:
                ratio = float(dt[s - 1] / dt[s - 2])
            out.append((ratio, r))
        return out

    def forward(
        self, emit: np.ndarray, dt: np.ndarray | None
    ) -> tuple[np.ndarray, list[tuple[float, float]], float]:
        """Normalised forward messages over pairs, the steps, and log P(photos | a track)."""
        g, w = self.g, emit.shape[0]
        steps = self.steps(dt, w)
        alphas = np.empty((w, g.n))
        # Photo 0 is preceded by a photo that says nothing: the first pair's first place is free.
        alphas[0] = emit[0][g.b] + self.land + self.mask(steps[0][1])
        log_z = _lse(alphas[0])
        alphas[0] -= log_z
        for s in range(1, w):
            moved = (alphas[s - 1][g.t1] + self.transition(*steps[s]))[g.by_t2]
            keep = _seg_lse(moved, g.t2_starts, g.n, g.t2_segs)
            jump = self.log_restart + self.land + self.mask(steps[s][1])
            a = np.logaddexp(self.log_keep + keep, jump) + emit[s][g.b]
            norm = _lse(a)
            log_z += norm
            alphas[s] = a - norm
        return alphas, steps, log_z

    def evidence(self, emit: np.ndarray, log_z: float) -> float:
        """How much better one track explains the photos than unrelated places (nats)."""
        indep = float(sum(_lse(e) for e in emit)) - emit.shape[0] * math.log(self.g.u)
        return log_z - indep

    def posterior(
        self, emit: np.ndarray, alphas: np.ndarray, steps: list[tuple[float, float]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per photo: its most probable place (index into the window's rows), that place's
        probability, and the probability that the track broke just before it."""
        g, w = self.g, emit.shape[0]
        betas = np.zeros((w, g.n))
        broken = np.zeros(w)
        for s in range(w - 1, 0, -1):
            nxt = betas[s] + emit[s][g.b]  # per pair of step s
            tr = self.transition(*steps[s])
            keep = _seg_lse(tr + nxt[g.t2], g.t1_starts, g.n, g.t1_segs)
            jump = self.log_restart + _lse(nxt + self.land + self.mask(steps[s][1]))
            whole = np.logaddexp(self.log_keep + keep, jump)
            b = np.where(np.isfinite(alphas[s - 1]), whole, -np.inf)
            betas[s - 1] = b - _lse(b[np.isfinite(b)]) if np.isfinite(b).any() else b
            # P(break before photo s): the restart's share of all that reaches photo s.
            total = _lse(alphas[s - 1] + whole)
            broken[s] = math.exp(min(0.0, jump - total)) if np.isfinite(total) else 1.0
        place = np.zeros(w, np.int64)
        prob = np.zeros(w)
        for s in range(w):
            post = alphas[s] + betas[s]
            post = np.exp(post - _lse(post))
            marg = np.bincount(g.b, weights=post, minlength=g.u)
            place[s] = int(np.argmax(marg))
            prob[s] = min(1.0, float(marg[place[s]]))
        return place, prob, broken
