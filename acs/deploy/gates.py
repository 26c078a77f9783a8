"""Gate executors of the DenseNet executor: each gate's eval-mode decision for one sample, computed
from the live input channels only, with everything mask-independent precomputed at conversion
(BatchNorm folded into the neighbouring linear map, weights stored input-major so that slicing the
live input channels is one row gather).

Every executor reads the summary of the layer input that its gate reads (``reads``, copied from
the gate, see :func:`acs.gates.summarize`), which the block keeps up to date as channels are
appended (:func:`summarize_sample`): ``SUMMARY_SUBSAMPLED``, the live channels at every other
pixel (L × rows·cols, what a stride-2 1×1 conv reads: ``acs``, ``ddi``); ``SUMMARY_MEAN``, their
global average pool (L × 1, ``aig``); ``SUMMARY_ABSMEAN``, the pool of their absolute values
(L × 1, ``fbs``). A channel skipped upstream is exactly 0 in the model's input, so it adds nothing
to a 1×1 conv or to a pool: dropping it loses nothing. ``convs`` lists the (kernel, stride,
padding) of the gate's spatial convolutions on the stride-2 map, in order, whose im2col indices
the executor caches per input size (``plans``).

``forward(summary, rows, cols, live, plans)`` returns the bool keep-mask (k), the per-channel factor
on the kept outputs (``None`` unless the gate scales them, as FBS does) and the MACs executed, which
are the cost model's ``gate.macs(in_hw, live_in)``: all multiply-accumulates run as mm/addmm/bmm, so
an op-level FLOP counter sees exactly them.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs.deploy.fold import bn_affine, conv_im2col, frozen, grouped, im2col_weight
from acs.gates import ACSGate, AIGGate, DDIGate, FBSGate, Gate, StaticGate
from acs.gates import base as gate_base  # its constants by attribute: TorchScript takes no global ints
from acs.gates.designs import scale_free


def summarize_sample(x: Tensor, reads: int, height: int, width: int) -> Tensor:
    """:func:`acs.gates.summarize` of one sample's channels ``x`` (C × H·W, flattened: the
    executor's layout, hence ``height`` and ``width``) for a gate's ``reads`` other than
    ``SUMMARY_INPUT`` (which needs no copy): every other pixel (C × rows × cols), the global mean
    or that of ``|x|`` (C × 1)."""
    if reads == gate_base.SUMMARY_SUBSAMPLED:
        return x.view(x.shape[0], height, width)[:, ::2, ::2]
    if reads == gate_base.SUMMARY_MEAN:
        return x.mean(1, keepdim=True)
    return x.abs().mean(1, keepdim=True)  # SUMMARY_ABSMEAN


def _square(conv: nn.Module) -> Tuple[int, int, int]:
    """(kernel, stride, padding) of a conv with square kernel, stride and padding."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    if len(set(k)) > 1 or len(set(s)) > 1 or len(set(p)) > 1:
        raise NotImplementedError(f"deployment expects square kernel, stride and padding in gate convs, got {conv}")
    return k[0], s[0], p[0]


class ACSGateExec(nn.Module):
    """ACS-GN with BN folded into its first 3×3 conv and both 3×3 convs (DGConv, dense or fixed
    groups) as grouped GEMMs; the channel permutations of interleaved groupings are folded into the
    neighbouring weights, so at most one index_select remains (between the two grouped convs)."""

    def __init__(self, gate: ACSGate) -> None:
        super().__init__()
        self.reads, self.out_channels = gate.reads, gate.out_channels
        self.convs = [_square(gate.conv_a), _square(gate.conv_b)]
        a, b = grouped(gate.conv_a), grouped(gate.conv_b)
        reduce = frozen(gate.reduce.weight).flatten(1)
        identity = torch.arange(gate.reduce.out_channels, device=reduce.device)
        scale, shift = bn_affine(gate.bn)
        pos_a = identity if a.out_pos is None else a.out_pos
        if a.in_order is not None:
            reduce = reduce[a.in_order]
        self.register_buffer("reduce", reduce.t().contiguous())  # (C, width): input-major
        self.register_buffer("wa", im2col_weight(a.weight * scale[pos_a][:, None, None, None], a.groups))
        self.register_buffer("ba", shift[pos_a].reshape(a.groups, -1, 1).contiguous())
        # conv_b's grouped input j is original channel in_order[j], found at position argsort(pos_a)[...]
        mid = torch.argsort(pos_a)[identity if b.in_order is None else b.in_order]
        self.register_buffer("mid", None if torch.equal(mid, identity) else mid)
        self.register_buffer("wb", im2col_weight(b.weight, b.groups))
        head = frozen(gate.head.weight).flatten(1)
        self.register_buffer("wh", head if b.out_pos is None else head[:, b.out_pos].contiguous())
        self.register_buffer("bh", frozen(gate.head.bias))
        (self.ka, self.sa, self.pa), (self.kb, self.sb, self.pb) = self.convs

    def forward(
        self, xs: Tensor, rows: int, cols: int, live: Optional[Tensor], plans: List[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        w = self.reduce if live is None else self.reduce.index_select(0, live)
        h = torch.mm(w.t(), xs).view(-1, rows, cols)
        macs = w.numel() * rows * cols
        h, m = conv_im2col(h, self.wa, self.ba, plans[0], self.ka, self.sa, self.pa)
        h = h.relu_()
        if self.mid is not None:
            h = h.index_select(0, self.mid)
        h, m2 = conv_im2col(h, self.wb, None, plans[1], self.kb, self.sb, self.pb)
        # sigmoid(z) > 0.5 rather than z > 0: identical to the model also where sigmoid rounds to 0.5.
        keep = F.linear(h.mean((1, 2)), self.wh, self.bh).sigmoid() > 0.5
        return keep, None, macs + m + m2 + self.wh.numel()


class DDIGateExec(nn.Module):
    """DDI: the stride-2 1×1 conv with its BN folded in (bias in the GEMM), ReLU, the 3×3 conv as an
    im2col GEMM, pool, linear head, sigmoid > 0.5."""

    def __init__(self, gate: DDIGate) -> None:
        super().__init__()
        self.reads, self.out_channels = gate.reads, gate.out_channels
        self.convs = [_square(gate.conv)]
        self.k, self.s, self.p = self.convs[0]
        c = grouped(gate.conv)
        if c.in_order is not None or c.out_pos is not None:
            raise NotImplementedError("deployment expects the DDI gate's 3×3 conv without channel permutations")
        scale, shift = bn_affine(gate.bn)
        reduce = frozen(gate.reduce.weight).flatten(1) * scale[:, None]  # BN folded into the 1×1 conv
        self.register_buffer("reduce", reduce.t().contiguous())  # (C, width): input-major
        self.register_buffer("shift", shift[:, None].contiguous())
        self.register_buffer("wc", im2col_weight(c.weight, c.groups))
        self.register_buffer("wh", frozen(gate.head.weight))
        self.register_buffer("bh", frozen(gate.head.bias))

    def forward(
        self, xs: Tensor, rows: int, cols: int, live: Optional[Tensor], plans: List[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        w = self.reduce if live is None else self.reduce.index_select(0, live)
        h = torch.addmm(self.shift, w.t(), xs).relu_().view(-1, rows, cols)
        macs = w.numel() * rows * cols
        h, m = conv_im2col(h, self.wc, None, plans[0], self.k, self.s, self.p)
        keep = F.linear(h.mean((1, 2)), self.wh, self.bh).sigmoid() > 0.5
        return keep, None, macs + m + self.wh.numel()


class AIGGateExec(nn.Module):
    """ConvNet-AIG on the pooled live channels: squeeze with its BN folded in, ReLU, the (off, on)
    pair linear computed in full (as the cost model counts it), ``σ(on − off) > 0.5`` as the model's
    evaluation (the argmax of the pair)."""

    def __init__(self, gate: AIGGate) -> None:
        super().__init__()
        self.reads, self.out_channels, self.convs = gate.reads, gate.out_channels, []
        scale, shift = bn_affine(gate.bn)
        squeeze = frozen(gate.squeeze.weight) * scale[:, None]  # BN folded into the squeeze
        self.register_buffer("squeeze", squeeze.t().contiguous())  # (C, width): input-major
        self.register_buffer("shift", shift[None].contiguous())
        self.register_buffer("pair", frozen(gate.pair.weight).t().contiguous())  # (width, 2k)
        self.register_buffer("pair_bias", frozen(gate.pair.bias)[None].contiguous())

    def forward(
        self, pooled: Tensor, rows: int, cols: int, live: Optional[Tensor], plans: List[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        w = self.squeeze if live is None else self.squeeze.index_select(0, live)
        h = torch.addmm(self.shift, pooled.t(), w).relu_()
        pair = torch.addmm(self.pair_bias, h, self.pair).view(-1, 2)
        keep = (pair[:, 1] - pair[:, 0]).sigmoid() > 0.5
        return keep, None, w.numel() + self.pair.numel()


class FBSGateExec(nn.Module):
    """FBS on the pooled absolute values of the live channels, relative to their largest (the
    model's ``scale_free``): saliency ``relu(linear)``, the top ``⌈d·k⌉`` kept (``topk`` on the
    same vector as the model, so ties break alike), and the saliencies returned as the factor on
    the kept outputs."""

    def __init__(self, gate: FBSGate) -> None:
        super().__init__()
        self.reads, self.out_channels, self.convs = gate.reads, gate.out_channels, []
        self.kept = gate.kept
        self.register_buffer("weight", frozen(gate.saliency.weight).t().contiguous())  # (C, k): input-major
        self.register_buffer("bias", frozen(gate.saliency.bias)[None].contiguous())
        self.register_buffer("none", torch.zeros(gate.out_channels, dtype=torch.bool))

    def forward(
        self, pooled: Tensor, rows: int, cols: int, live: Optional[Tensor], plans: List[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        w = self.weight if live is None else self.weight.index_select(0, live)
        # The largest live magnitude is the largest of all (dead ones are 0): scale_free is exact here.
        s = torch.addmm(self.bias, scale_free(pooled.t()), w).relu_()
        keep = self.none.index_fill(0, s.topk(self.kept, dim=1).indices[0], True)
        return keep, s[0], w.numel()


_EXECUTORS = {ACSGate: ACSGateExec, DDIGate: DDIGateExec, AIGGate: AIGGateExec, FBSGate: FBSGateExec}


def gate_executor(gate: Gate) -> nn.Module:
    """The executor of one gate. Exact type match: a subclass may decide differently. (The native
    layer kernel runs ACS-GN itself, from an ACSGateExec's buffers.)"""
    executor = _EXECUTORS.get(type(gate))
    if type(gate) is StaticGate:
        raise NotImplementedError("static gates decide nothing per sample: deploy with acs.deploy.to_thin")
    if executor is None:
        names = ", ".join(cls.__name__ for cls in _EXECUTORS)
        raise NotImplementedError(
            f"the deployment executor has no executor for gate {type(gate).__name__}; it runs {names}. "
            "Add one to acs/deploy/gates.py (a module computing the eval-mode keep-mask of one sample "
            "from the live input channels, see ACSGateExec)"
        )
    return executor(gate)


__all__ = [
    "ACSGateExec",
    "AIGGateExec",
    "DDIGateExec",
    "FBSGateExec",
    "gate_executor",
    "summarize_sample",
]
