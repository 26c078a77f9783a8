"""Straight-through binarisation: exact 0/1 values forward, identity-shaped gradients backward.

Binary gates pick one of two estimators (``gate.estimator``):

- ``ste``: ``1[σ(z) > 0.5]`` forward, the gradient of ``σ(z)`` backward (ACS default);
- ``gumbel``: Gumbel-sigmoid. In training ``1[σ((z + L)/τ) > 0.5]`` forward with logistic noise
  ``L`` (the difference of two Gumbel samples), the gradient of ``σ((z + L)/τ)`` backward; in
  evaluation the deterministic ``ste`` decision. The decision ``z + L > 0`` does not depend on the
  temperature ``τ`` and is kept with probability exactly ``σ(z)``: ``τ`` only shapes the gradient.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

ESTIMATORS = ("ste", "gumbel")


class _StraightThrough(torch.autograd.Function):
    """``1[value > threshold]`` in forward (``threshold=None``: ``value`` rounded, which is
    ``1[value > 0.5]`` for values in [0, 1]), the incoming gradient unchanged to ``value`` in
    backward: one autograd node, no arithmetic on the way back."""

    @staticmethod
    def forward(ctx, value: Tensor, threshold: Optional[float]) -> Tensor:
        if threshold is None:
            return value.round()
        return (value > threshold).to(value.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def binarize_ste(value: Tensor, threshold: float = 0.0) -> Tensor:
    """``1[value > threshold]`` in forward; the gradient passes to ``value`` unchanged.

    The forward value is exactly the hard decision (``hard + (value - value.detach())`` computes
    the same in three more operations; there the bracket matters, since ``(hard + value) - value``
    rounds and can miss 1 by an ulp).
    """
    return _StraightThrough.apply(value, float(threshold))


def binarize_probs_ste(probs: Tensor) -> Tensor:
    """:func:`binarize_ste` at 0.5 of values in [0, 1] (probabilities), in one operation: rounding
    half to even sends exactly 0.5 to 0, as ``probs > 0.5`` does."""
    return _StraightThrough.apply(probs, None)


def check_estimator(estimator: str, temperature: float) -> None:
    """ValueError unless ``estimator`` is one of :data:`ESTIMATORS` and ``temperature`` > 0."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"gate.estimator must be one of {', '.join(ESTIMATORS)}, got '{estimator}'")
    if not temperature > 0:
        raise ValueError(f"gate.temperature must be > 0, got {temperature}")


def logistic_noise(numel: int, like: Tensor) -> Tensor:
    """``numel`` samples of the logistic noise of the ``gumbel`` estimator, in ``like``'s dtype and
    on its device: ``log(u) - log(1 - u) = logit(u)``, ``u`` clamped to [1e-6, 1 - 1e-6] by logit's
    eps."""
    return torch.rand(numel, dtype=like.dtype, device=like.device).logit(1e-6)


def binary_keep(
    logits: Tensor, estimator: str, temperature: float, training: bool, noise: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """(keep-mask, keep probability ``σ(z)``) from keep logits ``z`` with an estimator that
    :func:`check_estimator` accepted. ``noise``: the ``gumbel`` estimator's logistic noise (shaped
    like ``logits``) where the caller drew it (:func:`logistic_noise`); drawn here otherwise."""
    probs = logits.sigmoid()
    if estimator == "gumbel" and training:
        if noise is None:
            noise = logistic_noise(logits.numel(), logits).view_as(logits)
        noisy = logits + noise
        soft = (noisy if temperature == 1.0 else noisy / temperature).sigmoid()
        return binarize_probs_ste(soft), probs
    # σ(z) > 0.5 rather than z > 0: the deployed executor thresholds the same way, so both agree
    # also where σ rounds to exactly 0.5.
    return binarize_probs_ste(probs), probs
