"""The training objective: a classification loss plus a compute regularizer.

``loss = CE + beta · |C − minimum/100|`` where ``C`` is the batch-mean MACs over the dense model's
MACs: compute above the target is penalised and compute below it is pushed back up.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, target: Tensor, kind: str = "xent") -> Tuple[Tensor, Tensor]:
    """(loss to optimise, plain cross-entropy for reporting).

    ``adjust`` is the reference script's loss-normalised cross-entropy: the batch's cross-entropy
    divided by its own detached mean, so every batch contributes a gradient of the same scale.
    """
    xent = F.cross_entropy(logits.float(), target)
    if kind == "xent":
        return xent, xent.detach()
    if kind == "adjust":
        return xent / xent.detach().clamp_min(1e-12), xent.detach()
    raise ValueError(f"unknown loss '{kind}'; available: xent, adjust")


class FlopsRegularizer:
    """``beta · |C − minimum/100|`` with ``C = mean(macs) / dense_macs``."""

    def __init__(self, beta: float, minimum: float, dense_macs: int):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not 0 <= minimum <= 100:
            raise ValueError(f"minimum is a percentage in [0, 100], got {minimum}")
        self.beta, self.target, self.dense_macs = beta, minimum / 100.0, dense_macs

    def __call__(self, macs: Tensor) -> Tensor:
        ratio = macs.mean() / self.dense_macs
        return (self.beta * (ratio - self.target).abs()).float()


def build_regularizer(name: str, beta: float, minimum: float, dense_macs: int) -> Optional[FlopsRegularizer]:
    """``None`` when the run trains without a compute term (``none`` or ``beta = 0``)."""
    if name == "none" or beta == 0:
        return None
    if name == "flops":
        return FlopsRegularizer(beta, minimum, dense_macs)
    raise ValueError(f"unknown regularizer '{name}'; available: flops, none")


def accuracy_counts(logits: Tensor, target: Tensor, topk=(1, 5)) -> Tuple[int, ...]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at classes)."""
    maxk = min(max(topk), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(target[:, None])
    return tuple(int(hits[:, : min(k, maxk)].any(1).sum()) for k in topk)


def is_finite(value: Tensor) -> bool:
    return bool(torch.isfinite(value).all())
