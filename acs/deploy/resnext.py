"""The deployment executor of G-ResNeXt: every DGConv2d as a real grouped conv, BatchNorm folded
into the preceding conv. There are no per-sample gates, so a batch runs as one batch."""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs.cost import MACS_DTYPE
from acs.deploy.fold import bn_affine, conv_macs, frozen, grouped
from acs.models.base import Output
from acs.models.resnext import Bottleneck, GResNeXt


class _ConvBN(nn.Module):
    """conv → BN as one conv with the BN scale in the weight and its shift as the bias."""

    def __init__(self, weight: Tensor, bn: nn.BatchNorm2d, stride, padding, groups: int = 1) -> None:
        super().__init__()
        scale, shift = bn_affine(bn)
        self.register_buffer("weight", (weight * scale[:, None, None, None]).contiguous())
        self.register_buffer("bias", shift)
        self.stride, self.padding, self.groups = tuple(stride), tuple(padding), groups

    def forward(self, x: Tensor) -> Tuple[Tensor, int]:
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return out, conv_macs(out, self.weight)


class _BottleneckExec(nn.Module):
    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        g = grouped(block.conv2)
        w1, w3 = frozen(block.conv1.weight), frozen(block.conv3.weight)
        bn1, bn2 = copy.deepcopy(block.bn1), copy.deepcopy(block.bn2)
        with torch.no_grad():
            # Interleaved groups: permute conv1's outputs (and bn1) into the grouped input order and
            # conv3's inputs to the grouped output order, so no activation is ever permuted.
            if g.in_order is not None:
                w1 = w1[g.in_order]
                for t in (bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var):
                    if t is not None:
                        t.copy_(t[g.in_order])
            if g.out_pos is not None:
                w3 = w3[:, g.out_pos]
                for t in (bn2.weight, bn2.bias, bn2.running_mean, bn2.running_var):
                    if t is not None:
                        t.copy_(t[g.out_pos])
        self.conv1 = _ConvBN(w1, bn1, block.conv1.stride, block.conv1.padding)
        self.conv2 = _ConvBN(g.weight, bn2, block.conv2.stride, block.conv2.padding, g.groups)
        self.conv3 = _ConvBN(w3, block.bn3, block.conv3.stride, block.conv3.padding)
        self.down: Optional[_ConvBN] = None
        if block.downsample is not None:
            conv, bn = block.downsample[0], block.downsample[1]
            self.down = _ConvBN(frozen(conv.weight), bn, conv.stride, conv.padding)

    def forward(self, x: Tensor) -> Tuple[Tensor, int]:
        h, m1 = self.conv1(x)
        h, m2 = self.conv2(h.relu_())
        h, m3 = self.conv3(h.relu_())
        macs = m1 + m2 + m3
        if self.down is not None:
            x, m4 = self.down(x)
            macs += m4
        return (h + x).relu_(), macs


class DynamicResNeXt(nn.Module):
    """Executor of a :class:`GResNeXt`. Built by :func:`acs.deploy.to_dynamic`."""

    def __init__(self, model: GResNeXt) -> None:
        super().__init__()
        self.stem = _ConvBN(frozen(model.conv1.weight), model.bn1, model.conv1.stride, model.conv1.padding)
        self.maxpool = copy.deepcopy(model.maxpool)
        self.blocks = nn.ModuleList(_BottleneckExec(b) for name in model.stages for b in getattr(model, name))
        self.register_buffer("fc_weight", frozen(model.fc.weight))
        self.register_buffer("fc_bias", frozen(model.fc.bias))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Output:
        h, macs = self.stem(x)
        h = h.relu_()
        if self.maxpool is not None:
            h = self.maxpool(h)
        for block in self.blocks:
            h, block_macs = block(h)
            macs += block_macs
        logits = F.linear(h.mean((2, 3)), self.fc_weight, self.fc_bias)
        macs += self.fc_weight.numel()
        # Every sample runs the same convolutions.
        return Output(logits, torch.full((x.shape[0],), float(macs), dtype=MACS_DTYPE, device=x.device), [])
