"""DGConv2d (ACS-DG): a convolution whose channel connectivity is a learned Kronecker product.

``U = (U_1 ⊗ … ⊗ U_K) ⊗ J`` with ``U_k = (1 - g_k)·I₂ + g_k·1₂ₓ₂`` and ``J`` an all-ones block of
shape ``(out/2^K, in/2^K)``. ``K`` is the number of factors of two shared by the channel counts, so
the operator exists for any ``in``/``out`` (12→12, 48→12, 16→64, 3→16 with ``K = 0``) and reduces to
the original learnable-grouping operator when ``in = out = 2^K``.
"""
from __future__ import annotations

import functools
import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from acs.ops.binary import binarize_ste
from acs.ops.permute import PermutedGroupConv2d

IntOrPair = Union[int, Tuple[int, int]]


def shared_factors_of_two(a: int, b: int) -> int:
    """Largest ``K`` such that ``2^K`` divides both ``a`` and ``b``."""
    k = 0
    while a % 2 == 0 and b % 2 == 0:
        a, b, k = a // 2, b // 2, k + 1
    return k


@functools.lru_cache(maxsize=None)
def _bit_differences(bits: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(bits, 2^bits, 2^bits): 1 where bit ``k`` (most significant first) of the row and the column
    index differ. Cached: it depends on the sizes only."""
    index = torch.arange(2**bits, device=device)
    shifts = torch.arange(bits - 1, -1, -1, device=device)
    digits = (index[None, :] >> shifts[:, None]) & 1
    return (digits[:, :, None] != digits[:, None, :]).to(dtype)


class DGConv2d(nn.Module):
    """Dynamic grouping convolution with ``K`` binary gates (straight-through estimator).

    ``sort=False`` keeps gate 1 as the most significant Kronecker factor, so groups may interleave;
    ``sort=True`` puts the identity factors first, which makes every group a contiguous block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        bias: bool = False,
        sort: bool = False,
        gate_init_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.sort = sort
        self.num_gates = shared_factors_of_two(in_channels, out_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Gates start as tiny values of random sign: on the decision boundary, free to move either way.
        self.gates = nn.Parameter(torch.empty(self.num_gates).uniform_(-gate_init_scale, gate_init_scale))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Conv2d, so swapping one for the other changes nothing else.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def _ordered_gates(self) -> Tensor:
        """Binary gates (STE) in the order their Kronecker factors are multiplied."""
        binary = binarize_ste(self.gates)
        if self.sort:
            # Stable ascending sort of the hard values: identity factors (0) first, all-ones (1) last.
            binary = binary[torch.argsort(binary.detach(), stable=True)]
        return binary

    def mask(self) -> Tensor:
        """Binary connectivity ``U`` (out × in) used in forward, differentiable in the gates.

        Entry ``(o, i)`` of ``U_1 ⊗ … ⊗ U_K`` is ``Π_k U_k[bit_k(o), bit_k(i)]``, and ``U_k`` is 1
        where the bits agree and ``g_k`` where they differ: one product over the gates instead of
        ``K`` Kronecker products, which matters because the mask is rebuilt at every training step."""
        differ = _bit_differences(self.num_gates, self.gates.device, self.gates.dtype)
        u = torch.prod(1 - (1 - self._ordered_gates())[:, None, None] * differ, 0)
        block = self.out_channels >> self.num_gates, self.in_channels >> self.num_gates
        return torch.kron(u, u.new_ones(block))

    @property
    def groups(self) -> int:
        """Number of independent channel groups the current gates define."""
        return 2 ** (self.num_gates - int((self.gates.detach() > 0).sum()))

    def macs(self, h_out: int, w_out: int) -> Tensor:
        """Multiply-accumulates per sample: ``nnz(U)·kh·kw·h_out·w_out``, differentiable in the gates."""
        kh, kw = self.kernel_size
        return self.mask().sum() * (kh * kw * h_out * w_out)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight * self.mask().to(self.weight.dtype)[:, :, None, None]
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def set_contiguous_groups(self, groups: int) -> None:
        """Signs the gates so that ``mask()`` is the contiguous ``groups``-block diagonal, keeping their
        magnitudes: identity factors first (they split the channels into halves, quarters, ...), all-ones
        factors after them. A zero gate would read as negative, so magnitudes stay at least 1e-6."""
        bits = int(math.log2(groups)) if groups > 0 else -1
        if 2**bits != groups or bits > self.num_gates:
            raise ValueError(
                f"a DGConv2d with {self.num_gates} gates cannot express {groups} contiguous groups "
                f"({self.in_channels}→{self.out_channels} channels)"
            )
        signs = torch.ones_like(self.gates)
        signs[:bits] = -1.0
        self.gates.copy_(signs * self.gates.abs().clamp_min(1e-6))

    def _group_ids(self, channels: int) -> Tensor:
        """Group index of every channel: the Kronecker bits that sit under identity factors."""
        ordered = self._ordered_gates().detach() > 0
        block = torch.arange(channels) // (channels >> self.num_gates)
        ids = torch.zeros(channels, dtype=torch.long)
        for position, connected in enumerate(ordered.tolist()):
            if not connected:
                bit = (block >> (self.num_gates - 1 - position)) & 1
                ids = ids * 2 + bit
        return ids

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """Standard modules computing the same function with ``groups``-times fewer MACs.

        A plain grouped ``nn.Conv2d`` when the groups are contiguous, otherwise the grouped conv
        between two channel permutations.
        """
        groups = self.groups
        perm_in = torch.argsort(self._group_ids(self.in_channels), stable=True)
        perm_out = torch.argsort(self._group_ids(self.out_channels), stable=True)
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, groups=groups, bias=self.bias is not None,
        ).to(device=self.weight.device, dtype=self.weight.dtype)
        opg, ipg = self.out_channels // groups, self.in_channels // groups
        weight = self.weight[perm_out.to(self.weight.device)][:, perm_in.to(self.weight.device)]
        weight = weight.reshape(groups, opg, groups, ipg, *self.kernel_size)
        conv.weight.copy_(torch.cat([weight[g, :, g] for g in range(groups)]))
        if self.bias is not None:
            conv.bias.copy_(self.bias[perm_out.to(self.bias.device)])
        identity = torch.arange(self.in_channels)
        if torch.equal(perm_in, identity) and torch.equal(perm_out, torch.arange(self.out_channels)):
            return conv
        return PermutedGroupConv2d(
            perm_in.to(self.weight.device), conv, torch.argsort(perm_out).to(self.weight.device)
        )

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, num_gates={self.num_gates}, "
            f"groups={self.groups}, sort={self.sort}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        return text + ("" if self.bias is not None else ", bias=False")
