"""The paper's triplet ranking loss (Arandjelović et al. 2016, eq. 7) on descriptor distances.

Squared Euclidean distances with m = 0.1 as the paper (``trainWeakly.m``), or plain ones as the
PyTorch ports' ``nn.TripletMarginLoss`` (see core/training/train.py for what the difference does).
"""

from __future__ import annotations

import torch

from ..trainconfig import MiningConfig


def triplet_terms(
    q: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    margin: float,
    squared: bool = True,
    pos_mask: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinge terms max(min_i d(q, p_i) + m − d(q, n_j), 0), shape (T, M); 0 where masked.

    ``q`` (T, D), ``pos`` (T, P, D), ``neg`` (T, M, D); d is the squared Euclidean distance
    (the paper) or, with ``squared=False``, the plain one (the PyTorch ports).
    """
    d_pos = ((pos - q[:, None, :]) ** 2).sum(-1)
    d_neg = ((neg - q[:, None, :]) ** 2).sum(-1)
    if not squared:
        d_pos, d_neg = d_pos.clamp_min(1e-12).sqrt(), d_neg.clamp_min(1e-12).sqrt()
    if pos_mask is not None:
        d_pos = d_pos.masked_fill(~pos_mask, float("inf"))
    terms = (d_pos.min(dim=1, keepdim=True).values + margin - d_neg).clamp_min(0)
    if neg_mask is not None:
        terms = terms * neg_mask
    return terms


def triplet_loss(
    q,
    pos,
    neg,
    *,
    margin: float = MiningConfig.default_margin(),
    squared: bool = True,
    pos_mask=None,
    neg_mask=None,
) -> torch.Tensor:
    """The paper's eq. (7) summed over tuples: sum_j max(min_i d²(q,p_i) + m − d²(q,n_j), 0)."""
    return triplet_terms(
        q, pos, neg, margin=margin, squared=squared, pos_mask=pos_mask, neg_mask=neg_mask
    ).sum()
