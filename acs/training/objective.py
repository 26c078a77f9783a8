"""The training objective: a classification loss plus a regularizer of the gates (``beta · R``).

- ``flops``: ``R = |C − minimum/100|`` where ``C`` is the batch-mean MACs over the dense model's MACs:
  compute above the target is penalised and compute below it is pushed back up;
- ``target_rate`` (ConvNet-AIG): ``R`` = mean over gated layers of ``(keep rate − target)²``, the keep
  rate being the layer's fraction of kept channels in the batch;
- ``l1``: ``R`` = mean of the gates' soft keep probabilities (``Output.probs``);
- ``none``: no term.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from acs.models import Output
from acs.training.config import REGULARIZERS


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


class Regularizer:
    """``beta · R(out)``: a scalar (float32) term of the loss from a model's :class:`Output`."""

    def __init__(self, beta: float):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def __call__(self, out: Output) -> Tensor:
        return (self.beta * self.penalty(out)).float()

    def penalty(self, out: Output) -> Tensor:
        raise NotImplementedError


class FlopsRegularizer(Regularizer):
    """``beta · |C − minimum/100|`` with ``C = mean(macs) / dense_macs``."""

    def __init__(self, beta: float, minimum: float, dense_macs: int):
        super().__init__(beta)
        if not 0 <= minimum <= 100:
            raise ValueError(f"minimum is a percentage in [0, 100], got {minimum}")
        self.target, self.dense_macs = minimum / 100.0, dense_macs

    def penalty(self, out: Output) -> Tensor:
        return (out.macs.mean() / self.dense_macs - self.target).abs()


class TargetRateRegularizer(Regularizer):
    """``beta · mean_l (keep rate_l − target)²`` over the gated layers (ConvNet-AIG's target loss);
    zero for a model without gates."""

    def __init__(self, beta: float, target: float):
        super().__init__(beta)
        if not 0 <= target <= 1:
            raise ValueError(f"target is a keep rate in [0, 1], got {target}")
        self.target = target

    def penalty(self, out: Output) -> Tensor:
        if not out.masks:
            return out.logits.new_zeros(())
        rates = torch.stack([mask.mean() for mask in out.masks])
        return ((rates - self.target) ** 2).mean()


class L1Regularizer(Regularizer):
    """``beta · mean(probs)`` over every gate's soft scores of the batch; zero without gates.
    The scores are non-negative (keep probabilities, FBS saliencies): this is their mean L1 norm."""

    def penalty(self, out: Output) -> Tensor:
        if not out.probs:
            return out.logits.new_zeros(())
        return torch.cat([p.flatten() for p in out.probs]).mean()


def build_regularizer(cfg: Mapping[str, Any], dense_macs: int) -> Optional[Regularizer]:
    """The regularizer a ``regularizer`` config section names, or ``None`` when the run trains
    without one (``none`` or ``beta = 0``)."""
    name, beta = cfg["name"], cfg["beta"]
    if name == "none" or beta == 0:
        return None
    if name == "flops":
        return FlopsRegularizer(beta, cfg["minimum"], dense_macs)
    if name == "target_rate":
        return TargetRateRegularizer(beta, cfg["target"])
    if name == "l1":
        return L1Regularizer(beta)
    raise ValueError(f"unknown regularizer '{name}'; available: {', '.join(REGULARIZERS)}")
