"""Straight-through binarisation: exact 0/1 values forward, identity-shaped gradients backward."""
from torch import Tensor


def binarize_ste(value: Tensor, threshold: float = 0.0) -> Tensor:
    """``1[value > threshold]`` in forward; the gradient passes to ``value`` unchanged.

    The bracket matters: ``value - value.detach()`` is exactly zero, so the sum is exactly
    ``hard``, whereas ``(hard + value) - value`` rounds and can miss 1 by an ulp.
    """
    hard = (value > threshold).to(value.dtype)
    return hard + (value - value.detach())
