"""Straight-through binarisation: exact 0/1 values forward, identity-shaped gradients backward.

Binary gates pick one of two estimators (``gate.estimator``):

- ``ste``: ``1[σ(z) > 0.5]`` forward, the gradient of ``σ(z)`` backward (ACS default);
- ``gumbel``: Gumbel-sigmoid. In training ``1[σ((z + L)/τ) > 0.5]`` forward with logistic noise
  ``L`` (the difference of two Gumbel samples), the gradient of ``σ((z + L)/τ)`` backward; in
  evaluation the deterministic ``ste`` decision. The decision ``z + L > 0`` does not depend on the
  temperature ``τ`` and is kept with probability exactly ``σ(z)``: ``τ`` only shapes the gradient.
"""
from typing import Tuple

import torch
from torch import Tensor

ESTIMATORS = ("ste", "gumbel")


def binarize_ste(value: Tensor, threshold: float = 0.0) -> Tensor:
    """``1[value > threshold]`` in forward; the gradient passes to ``value`` unchanged.

    The bracket matters: ``value - value.detach()`` is exactly zero, so the sum is exactly
    ``hard``, whereas ``(hard + value) - value`` rounds and can miss 1 by an ulp.
    """
    hard = (value > threshold).to(value.dtype)
    return hard + (value - value.detach())


def check_estimator(estimator: str, temperature: float) -> None:
    """ValueError unless ``estimator`` is one of :data:`ESTIMATORS` and ``temperature`` > 0."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"gate.estimator must be one of {', '.join(ESTIMATORS)}, got '{estimator}'")
    if not temperature > 0:
        raise ValueError(f"gate.temperature must be > 0, got {temperature}")


def binary_keep(logits: Tensor, estimator: str, temperature: float, training: bool) -> Tuple[Tensor, Tensor]:
    """(keep-mask, keep probability ``σ(z)``) from keep logits ``z`` with an estimator that
    :func:`check_estimator` accepted."""
    probs = logits.sigmoid()
    if estimator == "gumbel" and training:
        uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = ((logits + uniform.log() - (-uniform).log1p()) / temperature).sigmoid()
        return binarize_ste(soft, 0.5), probs
    # σ(z) > 0.5 rather than z > 0: the deployed executor thresholds the same way, so both agree
    # also where σ rounds to exactly 0.5.
    return binarize_ste(probs, 0.5), probs
