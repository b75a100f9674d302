"""A training step: tuples mined from the descriptor cache, their stored features run through
the trainable part in one forward (what DDP needs), the loss, and the update.

Each tuple is a query, its best potential positive and its violating negatives (see mining.py).
Their inputs come from the run's :class:`~.frozen.FrozenStore` (the frozen layers' output,
computed once), so nothing is decoded and no worker process is forked here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..trainconfig import MiningConfig
from .frozen import FrozenStore, Key
from .loss import triplet_terms
from .mining import GroundTruth, TrainTuple, mine_tuple
from .trainenv import DistInfo, all_reduce_sum
from .trainsetup import RunProgress

log = logging.getLogger(__name__)


@dataclass
class Step:
    index: int  # 0-based step in the epoch
    tuples: list[TrainTuple]  # this rank's share
    total_tuples: int  # over all ranks


def mine_steps(
    queries: Sequence[int],
    first_step: int,
    per_step: int,
    batch_size: int,
    gt: GroundTruth,
    run: RunProgress,
    skipped: Counter,
    cfg: MiningConfig,
    seed: int,
    rank: int = 0,
) -> list[Step]:
    """Tuples of ``queries`` from the current cache, grouped into steps of ``per_step``.

    Every rank mines every query (same seeds, same cache), so all agree on the hard-negative
    cache and on which steps are empty; each keeps its own ``batch_size`` slice of each step.
    """
    found: dict[int, TrainTuple] = {}
    for q in map(int, queries):
        rng = np.random.default_rng([seed, run.epoch, q])
        t, why = mine_tuple(q, gt, run.q_desc, run.db_desc, run.neg_cache, rng, cfg)
        if t is None:
            skipped[why] += 1
        else:
            found[q] = t
    steps = []
    for i, g0 in enumerate(range(0, len(queries), per_step)):
        group = [int(q) for q in queries[g0 : g0 + per_step]]
        total = sum(1 for q in group if q in found)
        if total:
            mine = [
                found[q] for q in group[rank * batch_size : (rank + 1) * batch_size] if q in found
            ]
            steps.append(Step(first_step + i, mine, total))
    return steps


class StepInputs:
    """The distinct inputs of a step's tuples, grouped by shape, and where each one went."""

    def __init__(
        self,
        tuples: list[TrainTuple],
        q_keys: Sequence[Key],
        db_keys: Sequence[Key],
        store: FrozenStore,
    ) -> None:
        keys: list[Key] = []
        self.where: dict[tuple[str, int], int] = {}
        kept = []
        for t in tuples:
            mine = [("q", t.query), ("db", t.positive), *(("db", int(n)) for n in t.negatives)]
            stored = [(q_keys if k[0] == "q" else db_keys)[k[1]] for k in mine]
            missing = [s for s in stored if s not in store]
            if missing:  # unreadable photos never reach a tuple; a failed variant might
                log.warning("%s: not available; its tuple is skipped", missing[0][0])
                continue
            kept.append(t)
            for k, s in zip(mine, stored, strict=True):
                if k not in self.where:
                    self.where[k] = len(keys)
                    keys.append(s)
        self.tuples = kept
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            shapes.setdefault(store.records[key].shape, []).append(i)
        self.groups = [torch.stack([store.get(keys[i]) for i in idx]) for idx in shapes.values()]
        self.order = [i for idx in shapes.values() for i in idx]


def take_step(
    forward: nn.Module,
    inputs: StepInputs,
    run: RunProgress,
    cfg: MiningConfig,
    dist: DistInfo,
    device: torch.device,
    empty_shape: tuple[int, ...],
    chunk: int = 0,
) -> tuple[float, int, int]:
    """Forward, loss, backward and update; returns (loss sum, violations, tuples) over ranks.

    ``empty_shape``: one input's shape, for a rank without a tuple this step (DDP needs every
    rank's forward and backward). ``chunk`` > 0 (one process): a step of more images than that
    runs in two passes, so that memory holds the activations of ``chunk`` images, not of the
    whole step: descriptors first without gradients, the loss's gradient with respect to them,
    then each chunk again with gradients, back-propagating its rows of that gradient. The
    result is the one-pass gradient; the price, a second forward of the trainable part.
    """
    tuples = inputs.tuples
    if tuples:
        groups = [g.to(device, non_blocking=True) for g in inputs.groups]
        order = inputs.order
    else:
        groups, order = [torch.zeros((1, *empty_shape), device=device)], [0]
    two_pass = not dist.active and 0 < chunk < sum(len(g) for g in groups)
    with torch.no_grad() if two_pass else nullcontext():
        outs = forward(groups)
    flat = torch.cat([o.float() for o in outs])
    if two_pass:
        flat.requires_grad_(True)
    desc = flat[torch.argsort(torch.as_tensor(order, device=flat.device))]
    if tuples:
        where = inputs.where
        m = max(len(t.negatives) for t in tuples)
        qi = torch.as_tensor([where[("q", t.query)] for t in tuples], device=desc.device)
        pi = torch.as_tensor([where[("db", t.positive)] for t in tuples], device=desc.device)
        ni = torch.zeros(len(tuples), m, dtype=torch.long)
        mask = torch.zeros(len(tuples), m, dtype=torch.bool)
        for r, t in enumerate(tuples):
            ni[r, : len(t.negatives)] = torch.as_tensor(
                [where[("db", int(n))] for n in t.negatives]
            )
            mask[r, : len(t.negatives)] = True
        ni, mask = ni.to(desc.device), mask.to(desc.device)
        terms = triplet_terms(
            desc[qi],
            desc[pi][:, None, :],
            desc[ni],
            margin=cfg.effective_margin,
            squared=cfg.squared,
            neg_mask=mask,
        )
        local_sum, local_viol = terms.sum(), int((terms > 0).sum())
    else:
        local_sum, local_viol = desc.sum() * 0.0, 0
    total_sum, total_viol, total_tuples = all_reduce_sum(
        [float(local_sum.detach()), float(local_viol), float(len(tuples))], dist
    )
    # Relja's update: the step's summed gradient over its number of violating pairs. DDP
    # averages over ranks, hence the world factor.
    loss = local_sum * (dist.world / max(total_viol, 1.0))
    scaler = run.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if two_pass and flat.grad is not None:
        _replay(forward.inner, groups, flat.grad, chunk)
    if total_viol > 0:  # as trainWeakly.m: no violation, no update (not even weight decay)
        if scaler is not None:
            scaler.step(run.optimizer)
            scaler.update()
        else:
            run.optimizer.step()
        run.stale = True
    run.optimizer.zero_grad(set_to_none=True)
    return total_sum, int(total_viol), int(total_tuples)


def _replay(tail: nn.Module, groups: list[torch.Tensor], grads: torch.Tensor, chunk: int) -> None:
    """The second pass of a two-pass step: each chunk's forward with gradients, then its rows of
    the loss's gradient with respect to the descriptors, back-propagated into the weights."""
    row = 0
    for group in groups:
        for c0 in range(0, len(group), chunk):
            part = group[c0 : c0 + chunk]
            out = tail(part).float()
            out.backward(grads[row + c0 : row + c0 + len(part)])
        row += len(group)
