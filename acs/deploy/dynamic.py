"""The deployment executor of DenseNets: per sample, skipped channels really cost nothing.

State carried through a dense block for one sample: ``x`` (L × H·W) holds only the *live* channels
of the concatenated features, in channel order, and ``alive`` is the bool liveness of every channel
so far (``None`` = all live). Per layer: the gate (:mod:`acs.deploy.gates`) reads a summary of
``x`` that the block keeps up to date (every other pixel, or the global pool) with its input weight
sliced to the live channels; the 3×3 conv computes only the kept outputs from the live inputs
(scaled by the gate's factor where it has one, as FBS does); dead inputs (0 before BN, so the
constant ``relu(shift)`` after BN-ReLU) enter as precomputed constants: a per-output bias for 1×1
convs and the classifier; for zero-padded 3×3 convs a per-(output, kernel position) table summed
over the dead channels and added to the GEMM rows, which col2im expands border-exactly
(see :func:`acs.deploy.fold.conv3x3_kn2row`). Folds use index_select/sum and the bias slot of
addmm only, so an op-level FLOP counter sees exactly the executed convolutions.

Weights whose input channels get sliced per sample are stored input-major (rows = input
channels), because gathering whole rows is the cheapest slice.

The liveness of a block's channels is one bool buffer that each layer's gate decision is written
into (the block's keep-masks are slices of it). With ``native`` (CPU), each layer with its ACS gate
is one call of a compiled kernel over these same buffers (:class:`_NativeDenseLayerExec`,
:mod:`acs.deploy.native`), a block whose gates are all ACS (or none) is one call for all its
layers, and each transition and the classifier are one call each; the tensor-operation path stays
for other devices and machines where the kernels cannot be built.
"""

from __future__ import annotations

import copy
import warnings
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from acs.cost import MACS_DTYPE
from acs.deploy.fold import (
    bn_affine,
    conv3x3_kn2row,
    conv_im2col,
    conv_output_hw,
    frozen,
    grouped,
    im2col_index,
    im2col_weight,
    kn2row_weight,
    stacked_rows,
)
from acs.deploy.gates import ACSGateExec, gate_executor, summarize_sample
from acs.deploy.native import load as load_native
from acs.gates import base as gate_base  # its constants by attribute: TorchScript takes no global ints
from acs.models.base import Output
from acs.models.densenet import DenseLayer, DenseNet, Transition


def _affine(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """BN as one (2, C) buffer (scale, shift: one gather slices both) and the dead-channel value
    ``relu(shift)`` (what a skipped channel is after BN-ReLU, everywhere)."""
    scale, shift = bn_affine(bn)
    return torch.stack([scale, shift]).contiguous(), shift.relu()


def _split(alive: Optional[Tensor], channels: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(live, dead) channel indices from a liveness mask; (None, None) when every channel is live."""
    if alive is None:
        return None, None
    live = alive.nonzero().view(-1)
    if live.shape[0] == channels:
        return None, None
    return live, (~alive).nonzero().view(-1)


def _unit(channels: int) -> Tensor:
    return torch.stack([torch.zeros(channels), torch.ones(channels)])


def _bn_relu(x: Tensor, affine: Tensor, unit: Tensor, live: Optional[Tensor]) -> Tensor:
    """BN-ReLU of the live channels ``x`` (L × H·W). ``unit`` (2, C) holds zeros and ones: the
    eval-mode batch_norm kernel with mean 0, variance 1 and eps 0 computes exactly ``x·scale +
    shift``, about three times faster than addcmul's broadcasting kernel."""
    if live is not None:
        affine = affine.index_select(1, live)
    n = x.shape[0]
    return F.batch_norm(x[None], unit[0, :n], unit[1, :n], affine[0], affine[1], False, 0.0, 0.0)[0].relu_()


class LayerChannels(NamedTuple):
    """Which channels a dense layer computes with, for one sample: its ``live`` and ``dead`` input
    channels (indices; both ``None`` when every input is live), and its gate's decision on its new
    channels: the bool ``keep``-mask (``None``: no gate, all computed) and the factor on the kept
    ones (``scale``, indexed by channel; ``None`` unless the gate scales them, as FBS does)."""

    live: Optional[Tensor]
    dead: Optional[Tensor]
    keep: Optional[Tensor]
    scale: Optional[Tensor]


class _DenseLayerExec(nn.Module):
    """One dense layer for one sample. Its 3×3 conv runs in one of three forms, told apart by the
    buffers it has: ``dense`` (slice to the kept outputs and the live inputs, fold the dead ones),
    ``stack`` (``in_idx``: a grouped conv after the bottleneck: each kept output with its group's
    inputs, ``groups = kept``), ``grouped`` (``groups > 1``, ungated model: the materialised grouped
    conv, every output). All run as GEMM + col2im (kn2row)."""

    fused = False  # the native subclass runs every 3×3 conv dense or stacked

    def __init__(self, layer: DenseLayer, gated_model: bool) -> None:
        super().__init__()
        conv2 = layer.conv2
        if tuple(conv2.kernel_size) != (3, 3) or tuple(conv2.stride) != (1, 1) or tuple(conv2.padding) != (1, 1):
            raise NotImplementedError("deployment expects the dense layer's 3×3 conv with stride 1, padding 1")
        self.in_channels, self.growth = layer.norm1.num_features, conv2.out_channels
        self.gated_model = gated_model  # whether any input may have been skipped
        self.gate = gate_executor(layer.gate) if layer.gate is not None else None
        self.reads = gate_base.SUMMARY_INPUT  # set by the block: what its summary buffer holds (SUMMARY_INPUT: none)
        affine, value = _affine(layer.norm1)
        self.register_buffer("bn1", affine)
        self.register_buffer("unit", _unit(self.in_channels))
        self.bottleneck = layer.conv1 is not None
        w1 = b1 = c1 = None
        if layer.conv1 is not None:
            s2, t2 = bn_affine(layer.norm2)
            w1 = frozen(layer.conv1.weight).flatten(1) * s2[:, None]  # BN folded into the 1×1 conv
            b1 = t2[:, None]
            c1 = (w1 * value).t()[:, :, None]  # (C, B, 1): dead input c adds c1[c] before the ReLU
        g = grouped(conv2)
        self.groups, in_idx, in_order, out_perm, table = g.groups, None, None, None, None
        if g.groups == 1:
            w2 = kn2row_weight(g.weight).permute(2, 0, 1)  # dense: (in, growth, 9)
            if not self.bottleneck and gated_model:
                # What a dead input adds to each GEMM row (output, kernel position); col2im then
                # sums exactly the in-bounds kernel positions: conv(ones·v_c, W[:, c]), borders included.
                table = w2 * value[:, None, None]
        elif not gated_model and not self.fused:
            in_order = g.in_order  # grouped
            w2 = kn2row_weight(g.weight).view(g.groups, -1, g.weight.shape[1])
            if in_order is not None and w1 is not None:
                # Reorder the bottleneck's outputs instead of the activations.
                w1, b1, c1, in_order = w1[in_order], b1[in_order], c1[:, in_order], None
            if g.out_pos is not None:
                out_perm = torch.argsort(g.out_pos)
        elif self.bottleneck or not gated_model:  # stack
            in_idx, weight = stacked_rows(conv2)
            w2 = kn2row_weight(weight)  # (growth, 9, in/groups): one group per output
        else:
            raise NotImplementedError(
                "deployment of a grouped (conv='dgconv' or 'group') 3×3 conv that reads gated, possibly "
                "skipped inputs directly (no bottleneck) is not supported; use conv='dense' or a bottleneck DenseNet"
            )
        w1 = None if w1 is None else w1.t()  # (C, B): input-major
        for name, value_ in [
            ("w1", w1),
            ("b1", b1),
            ("c1", c1),
            ("w2", w2),
            ("in_idx", in_idx),
            ("in_order", in_order),
            ("out_perm", out_perm),
            ("table", table),
        ]:
            self.register_buffer(name, None if value_ is None else value_.contiguous())

    def forward(
        self,
        feat: Tensor,
        summary: Optional[Tensor],
        alive: Tensor,
        n: int,
        height: int,
        width: int,
        plans: List[Tensor],
    ) -> Tuple[int, int]:
        """Reads the ``n`` live channels in ``feat`` (and ``summary``, what the gates read of them),
        appends this layer's kept outputs to both and its keep decision to ``alive`` (the liveness
        of the block's channels, of which this layer's inputs are the first ``in_channels``);
        returns the new live count and the MACs."""
        live, dead = _split(alive[: self.in_channels], self.in_channels) if self.gated_model else (None, None)
        keep: Optional[Tensor] = None
        scale: Optional[Tensor] = None
        macs = 0
        if self.gate is not None:
            keep, scale, macs = self.decide(summary, n, height, width, live, plans)
            alive[self.in_channels : self.in_channels + self.growth].copy_(keep)
        n, m = self.compute(feat, summary, n, height, width, LayerChannels(live, dead, keep, scale))
        return n, macs + m

    def decide(
        self, summary: Optional[Tensor], n: int, height: int, width: int, live: Optional[Tensor], plans: List[Tensor]
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        """The gate's (keep, scale, MACs) for the ``n`` live channels' summary; the gate reads the
        layer's input at half its resolution."""
        assert self.gate is not None and summary is not None
        return self.gate(summary[:n], (height + 1) // 2, (width + 1) // 2, live, plans)

    def compute(
        self, feat: Tensor, summary: Optional[Tensor], n: int, height: int, width: int, channels: LayerChannels
    ) -> Tuple[int, int]:
        """The layer's kept outputs (``channels.keep``; all without gate), times ``channels.scale``
        if given, computed from the live inputs (``channels.live``) with the dead ones
        (``channels.dead``) folded in, appended to ``feat`` and ``summary``; returns the new live
        count and the MACs of the layer's convs."""
        live, dead, keep, scale = channels
        active: Optional[Tensor] = None
        if keep is not None:
            kept = keep.nonzero().view(-1)
            if kept.shape[0] == 0:
                return n, 0  # nothing kept: no BN, no bottleneck, no conv
            if kept.shape[0] < self.growth:
                active = kept
        macs = 0
        h = _bn_relu(feat[:n], self.bn1, self.unit, live)
        if self.w1 is not None:
            w1, b1 = self.w1, self.b1
            if live is not None and dead is not None:
                w1 = w1.index_select(0, live)
                b1 = b1 + self.c1.index_select(0, dead).sum(0)
            macs += w1.numel() * h.shape[1]
            h = torch.addmm(b1, w1.t(), h).relu_()
        w2 = self.w2
        # Dispatch on which buffers exist (not on a mode attribute) so that TorchScript prunes the other forms.
        if self.in_idx is not None:  # stack
            index = self.in_idx
            if active is not None:
                index, w2 = index.index_select(0, active), w2.index_select(0, active)
            h = h.index_select(0, index.view(-1)).view(w2.shape[0], -1, h.shape[1])
            out, m = conv3x3_kn2row(h, w2, height, width)
        elif self.groups > 1:  # grouped
            if self.in_order is not None:
                h = h.index_select(0, self.in_order)
            out, m = conv3x3_kn2row(h.view(self.groups, -1, h.shape[1]), w2, height, width)
            if self.out_perm is not None:
                out = out.index_select(0, self.out_perm)
        else:
            if live is not None and not self.bottleneck:
                w2 = w2.index_select(0, live)
            if active is not None:
                w2 = w2.index_select(1, active)
            bias: Optional[Tensor] = None
            if dead is not None and self.table is not None:
                bias = self.table.index_select(0, dead).sum(0)  # (growth, 9): all dead inputs together
                if active is not None:
                    bias = bias.index_select(0, active)
            out, m = conv3x3_kn2row(h, w2.view(w2.shape[0], -1).t(), height, width, bias)
        if scale is not None:  # a gate that boosts what it keeps (FBS)
            out = out.mul_((scale if active is None else scale.index_select(0, active))[:, None])
        k = out.shape[0]
        feat[n : n + k].copy_(out)
        if summary is not None:
            value = summarize_sample(out, self.reads, height, width)
            summary[n : n + k].view(value.shape).copy_(value)
        return n + k, macs + m


class _NativeDenseLayerExec(_DenseLayerExec):
    """The same layer as one fused call (``torch.ops.acs.dense_layer``, see :mod:`acs.deploy.native`):
    its ACS gate (the other gate designs run before it, as tensor operations), the liveness
    bookkeeping, BN-ReLU, bottleneck, the gathers of live inputs and kept outputs, the dead-channel
    fold, GEMM, col2im and the summary update. It runs dense and stacked 3×3 convs, so the grouped
    conv of an ungated model runs stacked (the same MACs)."""

    fused = True
    __annotations__ = {"gate_convs": List[int]}  # a type, not the string that postponed annotations make

    def __init__(self, layer: DenseLayer, gated_model: bool) -> None:
        super().__init__(layer, gated_model)
        gate = self.gate if type(self.gate) is ACSGateExec else None
        names = ["reduce", "wa", "ba", "mid", "wb", "wh", "bh"]
        for name in names:  # the fused gate's buffers (None: no gate, or one run before the call)
            self.register_buffer(f"gate_{name}", None if gate is None else getattr(gate, name))
        self.gate_convs = [v for conv in gate.convs for v in conv] if gate is not None else []

    def forward(
        self,
        feat: Tensor,
        summary: Optional[Tensor],
        alive: Tensor,
        n: int,
        height: int,
        width: int,
        plans: List[Tensor],
    ) -> Tuple[int, int]:
        keep: Optional[Tensor] = None
        scale: Optional[Tensor] = None
        macs = 0
        if self.gate is not None and self.gate_reduce is None:  # a gate design without native kernel
            live, _ = _split(alive[: self.in_channels], self.in_channels)
            keep, scale, macs = self.decide(summary, n, height, width, live, plans)
        n, m = torch.ops.acs.dense_layer(
            feat,
            feat if summary is None else summary,  # not read without summary (reads SUMMARY_INPUT)
            alive,
            n,
            self.in_channels,
            self.reads,  # SUMMARY_INPUT exactly where the block keeps no summary
            height,
            width,
            keep,
            scale,
            self.bn1,
            self.w1,
            self.b1,
            self.c1,
            self.w2,
            self.table,
            self.in_idx,
            self.gate_reduce,
            self.gate_wa,
            self.gate_ba,
            self.gate_mid,
            self.gate_wb,
            self.gate_wh,
            self.gate_bh,
            self.gate_convs,
        )
        return n, macs + m


class _TransitionExec(nn.Module):
    """BN-ReLU-1×1-avgpool on the live channels; dead ones are a per-output bias of the 1×1 conv."""

    def __init__(self, transition: Transition) -> None:
        super().__init__()
        affine, value = _affine(transition.norm)
        weight = frozen(transition.conv.weight).flatten(1)
        self.in_channels = weight.shape[1]
        self.register_buffer("bn", affine)
        self.register_buffer("unit", _unit(self.in_channels))
        self.register_buffer("weight", weight.t().contiguous())  # (C, out): input-major
        self.register_buffer("dead_bias", (weight * value).t().contiguous())  # (C, out)
        self.pool = copy.deepcopy(transition.pool)  # stateless; a copy keeps the model untouched
        pool = transition.pool
        # 2×2 average pooling as two adds of strided views: several times faster than avg_pool2d's
        # CPU kernel at batch 1. Any other pooling runs through the module.
        self.pair_pool = (
            isinstance(pool, nn.AvgPool2d)
            and _pair(pool.kernel_size) == (2, 2)
            and _pair(pool.stride or 2) == (2, 2)
            and _pair(pool.padding) == (0, 0)
            and not pool.ceil_mode
        )

    def forward(self, x: Tensor, height: int, width: int, alive: Optional[Tensor]) -> Tuple[Tensor, int]:
        live, dead = _split(alive, self.in_channels)
        h = _bn_relu(x, self.bn, self.unit, live)
        weight = self.weight
        # The 1×1 conv as a GEMM (oneDNN's conv is slower at batch 1), pooled after it as in the model.
        if live is not None and dead is not None:
            weight = weight.index_select(0, live)
            h = torch.addmm(self.dead_bias.index_select(0, dead).sum(0)[:, None], weight.t(), h)
        else:
            h = torch.mm(weight.t(), h)
        macs = weight.numel() * height * width
        if self.pair_pool and height % 2 == 0 and width % 2 == 0:
            rows = h.view(h.shape[0], height // 2, 2 * width)
            rows = (rows[:, :, :width] + rows[:, :, width:]).view(h.shape[0], height // 2, width // 2, 2)
            return (rows[:, :, :, 0] + rows[:, :, :, 1]).mul_(0.25), macs
        return self.pool(h.view(1, -1, height, width))[0], macs


class _NativeTransitionExec(_TransitionExec):
    """The same transition as one fused call (``torch.ops.acs.transition``, see :mod:`acs.deploy.native`),
    2×2 average pooling included."""

    def forward(self, x: Tensor, height: int, width: int, alive: Optional[Tensor]) -> Tuple[Tensor, int]:
        pool = self.pair_pool and height % 2 == 0 and width % 2 == 0
        out, macs = torch.ops.acs.transition(x, height, width, alive, self.bn, self.weight, self.dead_bias, pool)
        return (out if pool else self.pool(out.view(1, -1, height, width))[0]), macs


class _HeadExec(nn.Module):
    """Final BN-ReLU-pool-linear; dead channels are folded into the classifier's bias."""

    def __init__(self, norm: nn.BatchNorm2d, fc: nn.Linear) -> None:
        super().__init__()
        affine, value = _affine(norm)
        self.in_channels = fc.in_features
        self.register_buffer("bn", affine)
        self.register_buffer("unit", _unit(self.in_channels))
        self.register_buffer("weight", frozen(fc.weight).t().contiguous())  # (C, classes): input-major
        self.register_buffer("bias", frozen(fc.bias))
        self.register_buffer("dead_bias", (self.weight * value[:, None]).contiguous())

    def forward(self, x: Tensor, alive: Optional[Tensor]) -> Tuple[Tensor, int]:
        live, dead = _split(alive, self.in_channels)
        weight, bias = self.weight, self.bias
        if live is not None and dead is not None:
            weight, bias = weight.index_select(0, live), bias + self.dead_bias.index_select(0, dead).sum(0)
        h = _bn_relu(x, self.bn, self.unit, live).mean(1)
        return torch.addmm(bias, h[None], weight), weight.numel()


class _NativeHeadExec(_HeadExec):
    """The same classifier as one call (``torch.ops.acs.head``)."""

    def forward(self, x: Tensor, alive: Optional[Tensor]) -> Tuple[Tensor, int]:
        return torch.ops.acs.head(x, alive, self.bn, self.weight, self.bias, self.dead_bias)


class _BlockExec(nn.Module):
    """A dense block and the transition after it (if any), for one sample. The live channels
    accumulate in one buffer per block (and, for the gates, a second one with what they read of
    them), so that each layer writes only its new outputs instead of concatenating all features again.
    Natively, where every gate runs inside the layer kernel, the whole block is one call
    (``torch.ops.acs.dense_block``)."""

    __annotations__ = {"gate_convs": List[int]}  # a type, not the string that postponed annotations make

    def __init__(self, layers: nn.ModuleList, transition: Optional[Transition], gated: bool, native: bool) -> None:
        super().__init__()
        layer_exec = _NativeDenseLayerExec if native else _DenseLayerExec
        self.layers = nn.ModuleList(layer_exec(layer, gated) for layer in layers)
        self.gated = gated  # whether a channel may have been skipped (else the liveness is not read)
        transition_exec = _NativeTransitionExec if native else _TransitionExec
        self.transition = transition_exec(transition) if transition is not None else None
        last = self.layers[-1]
        self.channels = last.in_channels + last.growth
        reads = {layer.gate.reads for layer in self.layers if layer.gate is not None}
        if len(reads) > 1:
            names = sorted(gate_base.SUMMARIES[r] for r in reads)
            raise NotImplementedError(f"deployment expects the gates of a dense block to read one summary, got {names}")
        self.reads = reads.pop() if reads else gate_base.SUMMARY_INPUT
        for layer in self.layers:
            layer.reads = self.reads
        self.gate_convs = []  # of the layers' ACS gates, for the single call
        if native and all(layer.gate is None or layer.gate_reduce is not None for layer in self.layers):
            # Every gate runs inside the layer kernel (ACS, or none): the block is one call. The
            # attribute exists only then, so that TorchScript compiles the other path away.
            self.one_call = True
            self.gate_convs = next((layer.gate_convs for layer in self.layers if layer.gate is not None), [])
        self.all_gated = all(layer.gate is not None for layer in self.layers)  # masks: one slice of the liveness
        self.first_output = self.layers[0].in_channels

    def forward(
        self, x: Tensor, height: int, width: int, plans: List[Tensor]
    ) -> Tuple[Tensor, int, int, Optional[Tensor], int, List[Tensor]]:
        if hasattr(self, "one_call"):
            x, alive, macs, keeps = self._one_call(x, height, width)
        else:
            x, alive, macs, keeps = self._per_layer(x, height, width, plans)
        skipped: Optional[Tensor] = alive if self.gated else None
        if self.transition is not None:
            x, m = self.transition(x, height, width, skipped)
            height, width, skipped, macs = x.shape[1], x.shape[2], None, macs + m
            x = x.view(x.shape[0], -1)
        return x, height, width, skipped, macs, keeps

    def _one_call(self, x: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, int, List[Tensor]]:
        """The block's layers as one call of ``torch.ops.acs.dense_block``, with every layer's buffers."""
        buffers: List[Optional[Tensor]] = []
        in_channels: List[int] = []
        for layer in self.layers:
            in_channels.append(layer.in_channels)
            layer_buffers: List[Optional[Tensor]] = [
                layer.bn1, layer.w1, layer.b1, layer.c1, layer.w2, layer.table, layer.in_idx, layer.gate_reduce,
                layer.gate_wa, layer.gate_ba, layer.gate_mid, layer.gate_wb, layer.gate_wh, layer.gate_bh,
            ]  # fmt: skip
            buffers.extend(layer_buffers)
        x, alive, macs = torch.ops.acs.dense_block(
            x, height, width, self.reads, self.channels, in_channels, buffers, self.gate_convs
        )
        if self.all_gated:
            return x, alive, macs, [alive[self.first_output :]]
        keeps: List[Tensor] = []
        for gated in self.layers:
            if gated.gate is not None:
                keeps.append(alive[gated.in_channels : gated.in_channels + gated.growth])
        return x, alive, macs, keeps

    def _per_layer(
        self, x: Tensor, height: int, width: int, plans: List[Tensor]
    ) -> Tuple[Tensor, Tensor, int, List[Tensor]]:
        n = x.shape[0]
        feat = x.new_empty((self.channels, height * width))
        feat[:n].copy_(x)
        summary: Optional[Tensor] = None
        if self.reads != gate_base.SUMMARY_INPUT:
            value = summarize_sample(x, self.reads, height, width)
            summary = x.new_empty((self.channels, value[0].numel()))
            summary[:n].view(value.shape).copy_(value)
        alive = torch.ones(self.channels, dtype=torch.bool, device=x.device)  # filled in by the layers
        keeps: List[Tensor] = []  # returned, not passed in: TorchScript copies list arguments
        macs = 0
        for layer in self.layers:
            n, m = layer(feat, summary, alive, n, height, width, plans)
            macs += m
            if layer.gate is not None:
                keeps.append(alive[layer.in_channels : layer.in_channels + layer.growth])
        return feat[:n], alive, macs, keeps


class DynamicDenseNet(nn.Module):
    """Executor of a (gated or plain) :class:`DenseNet`; see the module docstring. Built by
    :func:`acs.deploy.to_dynamic`. ``native`` runs each dense layer with its ACS gate, and each
    transition, as one fused call (CPU only; see :mod:`acs.deploy.native`, which raises
    NativeUnavailable where it cannot build)."""

    def __init__(self, model: DenseNet, native: bool = False) -> None:
        super().__init__()
        if native:
            load_native()
        self.native = native
        stem = model.stem
        if (
            len(set(stem.kernel_size)) > 1
            or len(set(stem.stride)) > 1
            or len(set(stem.padding)) > 1
            or stem.groups != 1
            or stem.dilation != (1, 1)
        ):
            raise NotImplementedError(f"deployment expects a plain square stem conv, got {stem}")
        self.register_buffer("stem", im2col_weight(frozen(stem.weight)))
        self.stem_kernel, self.stem_stride, self.stem_padding = stem.kernel_size[0], stem.stride[0], stem.padding[0]
        gated = any(layer.gate is not None for block in model.blocks for layer in block)
        transitions = list(model.transitions) + [None] * (len(model.blocks) - len(model.transitions))
        self.blocks = nn.ModuleList(_BlockExec(b, t, gated, native) for b, t in zip(model.blocks, transitions))
        self.head = (_NativeHeadExec if native else _HeadExec)(model.norm, model.fc)
        gates = [layer.gate for block in self.blocks for layer in block.layers if layer.gate is not None]
        self.mask_sizes = [gate.out_channels for gate in gates]
        geometries = {tuple(gate.convs) for gate in gates}  # (kernel, stride, padding) of each gate conv
        if len(geometries) > 1:
            raise NotImplementedError("deployment expects the same gate convolutions in every gated layer")
        self.gate_convs = geometries.pop() if geometries else ()
        self._plans: Dict[tuple, List[Tensor]] = {}  # im2col indices per input size: derived, not state

    def script(self) -> "DynamicDenseNet":
        """Compiles the per-sample path (blocks and head) with TorchScript and freezes it (weights
        become constants), in place: at batch 1 the executor is bound by per-op interpreter
        overhead, which this cuts by about a third. Call it after moving the executor to its device.
        Falls back to eager execution, with a warning, where TorchScript is unavailable."""
        try:
            with warnings.catch_warnings():
                deprecated = ".*torch.jit.(script|freeze).*deprecated"
                warnings.filterwarnings("ignore", message=deprecated, category=FutureWarning)
                blocks = nn.ModuleList(torch.jit.freeze(torch.jit.script(block.eval())) for block in self.blocks)
                head = torch.jit.freeze(torch.jit.script(self.head.eval()))
        except Exception as error:  # TorchScript is deprecated; it may be missing or break later
            warnings.warn(f"TorchScript failed ({type(error).__name__}: {error}); the executor runs eagerly")
            return self
        self.blocks, self.head = blocks, head
        return self

    def _im2col_plans(self, convs: str, height: int, width: int) -> List[Tensor]:
        """The im2col index of the stem (``convs="stem"``), or those of the gate convs (``"gate"``,
        on the stride-2 map, in order), for ``height × width`` inputs."""
        key = (convs, height, width, self.stem.device)
        if key not in self._plans:
            device = self.stem.device
            if convs == "stem":
                plans = [im2col_index(height, width, self.stem_kernel, self.stem_stride, self.stem_padding, device)]
            else:
                plans, rows, cols = [], (height + 1) // 2, (width + 1) // 2
                for kernel, stride, padding in self.gate_convs:
                    plans.append(im2col_index(rows, cols, kernel, stride, padding, device))
                    rows, cols = conv_output_hw(rows, cols, kernel, stride, padding)
            self._plans[key] = plans
        return self._plans[key]

    def run_one(self, x: Tensor) -> Tuple[Tensor, int, List[Tensor]]:
        """Logits (1 × classes), executed MACs and the bool keep-masks of one sample (C × H × W)."""
        stem_index = self._im2col_plans("stem", x.shape[1], x.shape[2])[0]
        h, macs = conv_im2col(x, self.stem, None, stem_index, self.stem_kernel, self.stem_stride, self.stem_padding)
        height, width = h.shape[1], h.shape[2]
        x = h.view(h.shape[0], -1)
        keeps: List[Tensor] = []
        alive: Optional[Tensor] = None
        for block in self.blocks:
            x, height, width, alive, m, block_keeps = block(x, height, width, self._im2col_plans("gate", height, width))
            macs += m
            keeps.extend(block_keeps)
        logits, m = self.head(x, alive)
        return logits, macs + m, keeps

    @torch.no_grad()
    def forward(self, x: Tensor) -> Output:
        logits, macs, keeps = [], [], []
        for sample in x:  # samples with different masks share no work
            out, sample_macs, sample_keeps = self.run_one(sample)
            logits.append(out)
            macs.append(sample_macs)
            if sample_keeps:
                keeps.append(torch.cat(sample_keeps))
        masks: List[Tensor] = []
        if keeps:
            masks = list(torch.stack(keeps).to(x.dtype).split(self.mask_sizes, dim=1))
        return Output(torch.cat(logits), torch.tensor(macs, dtype=MACS_DTYPE, device=x.device), masks)
