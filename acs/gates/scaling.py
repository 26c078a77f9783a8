"""A gated layer's outputs times its gate's factor per channel, and their summary for the next gates,
as one autograd node each (DESIGN.md, "Launches"): ``mul`` and ``sum`` backward become one batched
product, and the pooled summary's backward joins the outputs' gradient in one operation."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from acs.gates.base import SUMMARY_ABSMEAN, SUMMARY_MEAN, summarize


def channel_dots(a: Tensor, b: Tensor) -> Tensor:
    """``Σ_hw a·b`` per sample and channel (N × C × H × W → N × C) in one operation: the batched
    C × C products of which the diagonal is kept. C times the arithmetic of ``(a * b).sum((2, 3))``,
    which is small next to the convolution that made the channels (9·C_in per output), and ``a`` may
    be a channel slice (a concatenation's gradient), which a per-channel batch could not view."""
    return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)).diagonal(0, 1, 2)


class _Scale(torch.autograd.Function):
    """``h · factor`` per channel: backward ``g · factor`` and :func:`channel_dots` ``(g, h)``."""

    @staticmethod
    def forward(ctx, h: Tensor, factor: Tensor) -> Tensor:
        ctx.save_for_backward(h, factor)
        return h * factor[:, :, None, None]

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, factor = ctx.saved_tensors
        grad_h = grad * factor[:, :, None, None] if ctx.needs_input_grad[0] else None
        return grad_h, channel_dots(grad, h) if ctx.needs_input_grad[1] else None


class _ScalePooled(torch.autograd.Function):
    """``out = h · factor`` per channel and its mean over the positions (of ``|out|`` with
    ``absolute``). Backward, the mean's gradient spread over the positions (times ``sgn(out)``) and
    the outputs' gradient are one ``add``/``addcmul``, where autograd takes a division, the sign's
    product and the sum of the two gradients; then :class:`_Scale`'s two operations."""

    @staticmethod
    def forward(ctx, h: Tensor, factor: Tensor, absolute: bool) -> Tuple[Tensor, Tensor]:
        out = h * factor[:, :, None, None]
        pooled = (out.abs() if absolute else out).mean((2, 3))
        ctx.save_for_backward(h, factor, out if absolute else None)
        ctx.absolute, ctx.area = absolute, h.shape[2] * h.shape[3]
        ctx.set_materialize_grads(False)
        return out, pooled

    @staticmethod
    def backward(ctx, grad: Optional[Tensor], grad_pooled: Optional[Tensor]):
        h, factor, out = ctx.saved_tensors
        if grad is None:
            grad = torch.zeros_like(h)
        if grad_pooled is not None:
            spread = grad_pooled[:, :, None, None]
            if ctx.absolute:
                grad = torch.addcmul(grad, out.sgn(), spread, value=1.0 / ctx.area)
            else:
                grad = torch.add(grad, spread, alpha=1.0 / ctx.area)
        grad_h = grad * factor[:, :, None, None] if ctx.needs_input_grad[0] else None
        return grad_h, channel_dots(grad, h) if ctx.needs_input_grad[1] else None, None


def scale_channels(h: Tensor, factor: Tensor, reads: Optional[int] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """``h · factor`` per channel (N × C × H × W times N × C, in ``h``'s dtype) and, where ``reads``
    is given, :func:`acs.gates.summarize` of it (``None`` otherwise)."""
    factor = factor.to(h.dtype)
    if reads in (SUMMARY_MEAN, SUMMARY_ABSMEAN):
        return _ScalePooled.apply(h, factor, reads == SUMMARY_ABSMEAN)
    out = _Scale.apply(h, factor)
    return out, None if reads is None else summarize(out, reads)
