"""DGConv2d (ACS-DG): a convolution whose channel connectivity is a learned Kronecker product.

``U = (U_1 ⊗ … ⊗ U_K) ⊗ J`` with ``U_k = (1 - g_k)·I₂ + g_k·1₂ₓ₂`` and ``J`` an all-ones block of
shape ``(out/2^K, in/2^K)``. ``K`` is the number of factors of two shared by the channel counts, so
the operator exists for any ``in``/``out`` (12→12, 48→12, 16→64, 3→16 with ``K = 0``) and reduces to
the original learnable-grouping operator when ``in = out = 2^K``.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

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
def _bit_tables(out_channels: int, in_channels: int, bits: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """``(differ, weights)``: ``weights[k] = 2^(bits-1-k)`` stands for Kronecker factor ``k`` (most
    significant first), and ``differ`` (out × in, int32) has bit ``weights[k]`` set where output
    ``o``'s and input ``i``'s indices into factor ``k`` differ (the ``J`` block included: rows
    ``o`` and columns ``i`` of one block share their factor indices). Cached: it depends on the
    sizes only, and takes 4 bytes per connection, where a table per factor took ``4·bits``."""
    rows = torch.arange(out_channels, device=device, dtype=torch.int32) // (out_channels >> bits)
    cols = torch.arange(in_channels, device=device, dtype=torch.int32) // (in_channels >> bits)
    weights = torch.tensor([1 << (bits - 1 - k) for k in range(bits)], dtype=torch.int32, device=device)
    return rows[:, None] ^ cols[None, :], weights


#: Above this many elements (modules × gates × out × in) the masks' backward goes factor by factor
#: (and above it for modules × out × in, module by module too), to bound its memory.
_BACKWARD_CHUNK = 1 << 24


class _KroneckerMasks(torch.autograd.Function):
    """Connectivity masks ``U`` (P × out × in, ``dtype``) of ``P`` DGConvs of one shape from their
    real gates (P × K), binarised at 0 with the straight-through estimator.

    Entry ``(o, i)`` of ``U_1 ⊗ … ⊗ U_K ⊗ J`` is ``Π_k U_k[bit_k(o), bit_k(i)]``, 1 where the bits
    agree and ``g_k`` where they differ: it is 1 exactly when no gate that is off (identity factor)
    has its bit set in ``differ[o, i]``. Backward, ``∂U[o, i]/∂g_k = d_k[o, i]·Π_{j≠k} U_j[...]``: 1
    where bit ``k`` differs and no other off gate's bit does, i.e. where
    ``differ & (off | bit_k) == bit_k``. A handful of operations for any number of modules, where
    the product of the factors took a few dozen per module, and ``prod``'s backward a host
    synchronisation (it counts the zeros with ``.item()``, except under a dispatch mode)."""

    @staticmethod
    def forward(ctx, gates: Tensor, differ: Tensor, weights: Tensor, dtype: torch.dtype) -> Tensor:
        off = ((gates <= 0) * weights).sum(-1, dtype=torch.int32)
        # Kept as attributes rather than saved tensors: the masks feed both the convolutions and
        # the cost (nnz), which callers may differentiate in separate backward passes, as they could
        # when each use built its own mask. ``off`` is made here and ``differ``/``weights`` are
        # cached constants, so nothing they hold can change before backward.
        ctx.off, ctx.differ, ctx.weights = off, differ, weights
        masks = differ.new_empty((off.shape[0], *differ.shape), dtype=dtype)
        return torch.eq(differ & off[:, None, None], 0, out=masks)  # compared straight into dtype

    @staticmethod
    def backward(ctx, grad: Tensor):
        off, differ, weights = ctx.off, ctx.differ, ctx.weights
        keys = off[:, None] | weights  # P × K
        count, bits = keys.shape
        if count * bits * differ.numel() <= _BACKWARD_CHUNK:
            hit = (differ & keys[:, :, None, None]) == weights[:, None, None]
            return (hit * grad[:, None]).sum((2, 3)), None, None, None
        out = grad.new_empty(count, bits)
        for k in range(bits):  # factor by factor, and module by module where even that is large
            if count * differ.numel() <= _BACKWARD_CHUNK:
                out[:, k] = (((differ & keys[:, k, None, None]) == weights[k]) * grad).sum((1, 2))
                continue
            for p in range(count):
                out[p, k] = (((differ & keys[p, k]) == weights[k]) * grad[p]).sum()
        return out, None, None, None


def kronecker_masks(gates: Tensor, out_channels: int, in_channels: int, dtype: torch.dtype) -> Tensor:
    """The connectivity ``U`` (P × out × in) of DGConvs with gates ``gates`` (P × K, real values
    binarised at 0, straight-through), differentiable in ``gates``."""
    # Compiled, the tables are constants of the graph: dynamo does not trace through a cache.
    tables = _bit_tables.__wrapped__ if torch.compiler.is_compiling() else _bit_tables
    differ, weights = tables(out_channels, in_channels, gates.shape[-1], gates.device)
    return _KroneckerMasks.apply(gates, differ, weights, dtype)


class PreparedDGConv(NamedTuple):
    """A DGConv2d's ``mask`` and masked ``weight`` for one forward pass, computed with those of its
    shape group (:func:`prepared_dgconvs`), and the group's ``nnz`` (float64, one per module:
    ``nnz(U)``, differentiable in the gates) with this module's ``index`` in it."""

    mask: Tensor
    weight: Tensor
    nnz: Tensor
    index: int


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
        self._prepared: Optional[PreparedDGConv] = None  # set by prepared_dgconvs for one forward pass
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
        """Binary connectivity ``U`` (out × in) used in forward, differentiable in the gates
        (straight-through): see :class:`_KroneckerMasks`. Within :func:`prepared_dgconvs`, the
        one computed for the forward pass."""
        prepared = getattr(self, "_prepared", None)
        if prepared is not None:
            return prepared.mask
        gates = self.gates if not self.sort else self._ordered_gates()
        return kronecker_masks(gates[None], self.out_channels, self.in_channels, self.gates.dtype)[0]

    @property
    def groups(self) -> int:
        """Number of independent channel groups the current gates define."""
        return 2 ** (self.num_gates - int((self.gates.detach() > 0).sum()))

    def macs(self, h_out: int, w_out: int) -> Tensor:
        """Multiply-accumulates per sample: ``nnz(U)·kh·kw·h_out·w_out``, differentiable in the gates."""
        kh, kw = self.kernel_size
        return self.mask().sum() * (kh * kw * h_out * w_out)

    def nnz(self) -> Tensor:
        """``nnz(U)`` (float64 scalar), differentiable in the gates: from the forward pass's batched
        masks where :func:`prepared_dgconvs` holds them."""
        prepared = getattr(self, "_prepared", None)
        if prepared is not None:
            return prepared.nnz[prepared.index]
        return self.mask().sum(dtype=torch.float64)

    def masked_weight(self) -> Tensor:
        """``weight`` with the connections ``U`` leaves out zeroed: the one computed for the whole
        model's forward pass where :func:`prepared_dgconvs` holds it, else this module's own."""
        prepared = getattr(self, "_prepared", None)
        if prepared is not None:
            return prepared.weight
        return self.weight * self.mask().to(self.weight.dtype)[:, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, self.stride, self.padding, self.dilation)

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


def _group_key(conv: DGConv2d) -> Tuple:
    w, g = conv.weight, conv.gates
    return (conv.out_channels, conv.in_channels, tuple(w.shape[2:]), conv.num_gates, w.dtype, w.device, g.dtype)


def _prepare_group(group: List[DGConv2d]) -> List[PreparedDGConv]:
    """Masked weights and ``nnz`` of DGConvs of one shape, in a few batched operations."""
    first = group[0]
    masks = kronecker_masks(
        torch.stack([m.gates for m in group]), first.out_channels, first.in_channels, first.weight.dtype
    )
    weights = torch.stack([m.weight for m in group]) * masks[:, :, :, None, None]
    nnz = masks.sum((1, 2), dtype=torch.float64)
    return [
        PreparedDGConv(mask, weight, nnz, index)
        for index, (mask, weight) in enumerate(zip(masks.unbind(0), weights.unbind(0)))
    ]


@contextlib.contextmanager
def prepared_dgconvs(model: nn.Module) -> Iterator[None]:
    """Within the block, every (unsorted) DGConv2d of ``model`` uses a mask and a masked weight
    computed together with those of its shape: one mask computation and one masking per shape
    group rather than a few dozen operations per module, forward and backward (DESIGN.md,
    "Launches"). Computed afresh at every entry: nothing is cached across forward passes, so
    parameters changed by any means (``.data`` included) are always seen."""
    groups: Dict[Tuple, List[DGConv2d]] = {}
    for module in model.modules():
        if isinstance(module, DGConv2d) and not module.sort:
            groups.setdefault(_group_key(module), []).append(module)
    try:
        for group in groups.values():
            for module, value in zip(group, _prepare_group(group)):
                module._prepared = value
        yield
    finally:
        for group in groups.values():
            for module in group:
                module._prepared = None
