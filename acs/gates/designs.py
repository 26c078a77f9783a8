"""The gate designs that ACS-GN is compared with, in the same slot and under the same cost model.

Which estimator each takes (``gate.estimator``, see :mod:`acs.ops.binary`):

- ``ddi``: ``ste`` (default) or ``gumbel``, like ``acs``;
- ``aig``: ``gumbel`` (default, ConvNet-AIG's hard Gumbel-softmax) or ``ste`` (argmax forward,
  softmax gradient backward);
- ``fbs``: none: its k-winners-take-all is deterministic, so it has no ``estimator`` option.

Their computations are Conv2d/Linear layers (on pooled features as linear layers), so the cost
model counts them like any other; pooling and BatchNorm are not counted, as everywhere.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs.cost import conv_output_size
from acs.gates.base import (
    SUMMARY_ABSMEAN,
    SUMMARY_MEAN,
    SUMMARY_SUBSAMPLED,
    CostLayer,
    Gate,
    GateOutput,
    LogitGate,
    check_width,
    keep_logit,
    register_gate,
)


@register_gate("ddi")
class DDIGate(LogitGate):
    """The DDI gate that ACS-GN was derived from: ``1×1 conv (C_in→w, stride 2) → BN → ReLU →
    3×3 conv (w→w) → global average pool → linear with bias (w→k) → sigmoid → 0.5 threshold``."""

    reads = SUMMARY_SUBSAMPLED
    keep_bias = "head.bias"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        init_keep: float = 0.9,
        estimator: str = "ste",
        temperature: float = 1.0,
        detach_input: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature, detach_input)
        check_width(width)
        self.reduce = nn.Conv2d(in_channels, width, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.head = nn.Linear(width, out_channels)
        nn.init.constant_(self.head.bias, keep_logit(init_keep))

    def score(self, summary: Tensor) -> Tensor:
        # The strided 1×1 conv as a 1×1 conv of every other pixel, as in ACSGate (faster on CPU).
        h = self.conv(self.bn(F.conv2d(summary, self.reduce.weight)).relu())
        return self.head(h.mean((2, 3)))

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        reduced = conv_output_size(self.reduce, in_hw)
        hw = conv_output_size(self.conv, reduced)
        return [(self.reduce, reduced, True), (self.conv, hw, False), (self.head, (1, 1), False)]


@register_gate("aig")
class AIGGate(LogitGate):
    """ConvNet-AIG: ``global average pool → linear (C_in→w) → BN → ReLU → linear (w→2k)``, an
    (off, on) logit pair per channel, hard Gumbel-softmax (straight-through) in training and argmax
    in evaluation.

    A two-way Gumbel-softmax over (off, on) is exactly a Gumbel-sigmoid of ``on − off`` (the
    difference of two Gumbel samples is logistic), so the pair's difference is this gate's keep logit
    and the shared estimators apply. The second linear computes both logits, as the design does, and
    is counted so; a deployment could fold it into one ``w→k`` layer.
    """

    reads = SUMMARY_MEAN
    keep_bias = "pair.bias"  # the (off, on) pair's: their difference is the keep logit

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 16,
        init_keep: float = 0.9,
        estimator: str = "gumbel",
        temperature: float = 1.0,
        detach_input: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature, detach_input)
        check_width(width)
        self.squeeze = nn.Linear(in_channels, width, bias=False)  # BN follows: a bias would be redundant
        self.bn = nn.BatchNorm1d(width)
        self.pair = nn.Linear(width, 2 * out_channels)
        self.register_buffer("on_minus_off", torch.tensor([-1.0, 1.0]), persistent=False)
        with torch.no_grad():
            bias = self.pair.bias.view(out_channels, 2)
            bias[:, 0] = 0.0
            bias[:, 1] = keep_logit(init_keep)

    def score(self, summary: Tensor) -> Tensor:
        h = self.squeeze(summary)
        if self.training and h.shape[0] == 1:
            # Batch statistics of one sample do not exist (BatchNorm1d raises); a loader's last batch
            # can be a single sample, so it is normalised with the running statistics instead.
            bn = self.bn
            h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        else:
            h = self.bn(h)
        # pair[..., 1] - pair[..., 0] as a product with (-1, 1): the same single rounding, and one
        # operation backward where the two selections take three.
        return self.pair(h.relu()).view(h.shape[0], self.out_channels, 2) @ self.on_minus_off

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        return [(self.squeeze, (1, 1), True), (self.pair, (1, 1), False)]


def scale_free(pooled: Tensor) -> Tensor:
    """Non-negative pooled magnitudes (N × C) relative to their largest per sample. A maximum,
    not a mean, so that channels absent from a sample (exact zeros, dropped at deployment) change
    nothing, bit for bit, whatever order a deployment reduces them in."""
    return pooled / pooled.amax(1, keepdim=True).clamp_min(1e-12)  # a literal: TorchScript compiles this


SCALE_FLOOR = 1e-12  # scale_free's, for _ScaleFree


class _ScaleFree(torch.autograd.Function):
    """:func:`scale_free` with its backward written out: ``y = p/m``, ``m = max(a, ε)``,
    ``a = max_c p_c`` gives ``∂L/∂p = (g - [a > ε]·t·Σ_c g_c y_c / n) / m`` with ``t`` the channels
    that attain the maximum and ``n`` their number (the maximum's gradient shared among ties, as
    ``amax`` shares it). ``t`` is taken as the channels equal to ``m`` itself, which holds none where
    ``a ≤ ε``: that gives the factor ``[a > ε]`` for free. Seven operations where autograd's chain of
    division, clamp and maximum takes about fifteen; the same values up to rounding."""

    @staticmethod
    def forward(ctx, pooled: Tensor) -> Tensor:
        scale = pooled.amax(1, keepdim=True).clamp_min(SCALE_FLOOR)
        out = pooled / scale
        ctx.save_for_backward(pooled, scale, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        pooled, scale, out = ctx.saved_tensors
        ties = pooled == scale
        # Σ_c g_c y_c per sample as one batched product, shared out among the ties; where there are
        # none (a ≤ ε) the share is 0/0, which ``where`` leaves out.
        dot = torch.bmm(grad[:, None, :], out[:, :, None]).view(-1, 1)
        return torch.where(ties, grad - dot / ties.sum(1, keepdim=True), grad) / scale


def _zeros(numel: int, like: Tensor) -> Tensor:
    return like.new_zeros(numel)


class _KWinners(torch.autograd.Function):
    """FBS's decision from saliency logits ``z`` (N × k): saliencies ``s = ReLU(z)``, the 0/1 mask
    of each row's ``kept`` largest (written into ``out``, zeros of ``z``'s shape; no gradient) and
    the boost ``s · mask``. Backward to ``z``, the boost's gradient through the product and the ReLU
    is ``g · [s · mask > 0]``: one ``threshold_backward``, where autograd takes a product and one."""

    @staticmethod
    def forward(ctx, z: Tensor, kept: int, out: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        s = z.relu()
        out.scatter_(1, s.topk(kept, dim=1).indices, 1.0)
        boost = s * out
        ctx.mark_dirty(out)
        ctx.mark_non_differentiable(out)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(s, boost)
        # Not a saved tensor: ``out`` is a view of the pass's masks (prepared_gates), whose shared
        # version counter the later gates' writes advance; this gate's part is written only here.
        ctx.mask = out
        return out, s, boost

    @staticmethod
    def backward(ctx, _: Optional[Tensor], grad_s: Optional[Tensor], grad_boost: Optional[Tensor]):
        s, boost = ctx.saved_tensors
        if grad_s is None:
            grad_z = torch.ops.aten.threshold_backward(grad_boost, boost, 0)
        else:  # the saliencies are read too (regularizer=l1)
            grad_s = grad_s if grad_boost is None else torch.addcmul(grad_s, grad_boost, ctx.mask)
            grad_z = torch.ops.aten.threshold_backward(grad_s, s, 0)
        return grad_z, None, None


def _scale_free_trained(pooled: Tensor) -> Tensor:
    """:func:`scale_free`, through :class:`_ScaleFree` where a gradient is recorded."""
    if torch.is_grad_enabled() and pooled.requires_grad:
        return _ScaleFree.apply(pooled)
    return scale_free(pooled)


@register_gate("fbs")
class FBSGate(Gate):
    """Feature Boosting and Suppression: saliency ``s = ReLU(linear(mean |x| per channel))``
    (C_in→k), keep the ``⌈density·k⌉`` most salient channels per sample (k-winners-take-all), and
    scale the kept outputs by their saliency.

    The mask stays binary and, as in FBS, carries no gradient: k-winners-take-all is not
    differentiable, and the saliencies learn through the ``scale`` they put on the winners (a
    straight-through mask on top doubled that path and fed the losers too, and the saliencies ran
    away within a few steps at lr 0.1). The saliencies on the winners are returned as the
    :class:`GateOutput` ``scale``, which the layer multiplies its outputs by, and in full as
    ``probs``, so that ``regularizer=l1`` is FBS's own lasso on the saliencies. The compute is
    fixed by ``density``: compute regularizers cannot move it.

    The pooled magnitudes are divided by their largest (per sample) before the linear map
    (:func:`scale_free`): a DenseNet layer's input holds the boosted outputs of the earlier gates,
    so raw magnitudes would feed each boost into every later saliency and grow geometrically with
    depth (FBS gates the conv input of a post-activation network, where this loop does not arise).
    """

    reads = SUMMARY_ABSMEAN

    def __init__(self, in_channels: int, out_channels: int, density: float = 0.5, detach_input: bool = False) -> None:
        super().__init__(in_channels, out_channels, detach_input)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"gate.density must lie in (0, 1], got {density}")
        # Rounded first, so that a density such as 1/3 of 12 channels keeps 4, not 5.
        self.kept = math.ceil(round(density * out_channels, 9))
        self.saliency = nn.Linear(in_channels, out_channels)
        # Saliencies start near 1, so that boosting does not first shrink every kept output.
        nn.init.constant_(self.saliency.bias, 1.0)

    def per_pass(self) -> Callable[[int, Tensor], Tensor]:
        return _zeros  # the mask that the winners are written into

    def decide(self, summary: Tensor) -> GateOutput:
        z = self.saliency(_scale_free_trained(summary))
        return GateOutput(*_KWinners.apply(z, self.kept, self.pass_tensor(z)))

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        return [(self.saliency, (1, 1), True)]
