"""Building blocks of the deployment executors: conversion-time precomputation of everything that
does not depend on the per-sample masks (BatchNorm affines, grouped DGConv forms, weight layouts),
and the per-sample convolution kernels, which report the MACs they execute (every kernel's MACs
are exactly the conv's kh·kw·H_out·W_out·outputs·inputs-per-group).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs.ops import DGConv2d, PermutedGroupConv2d


def frozen(t: Tensor) -> Tensor:
    """A detached copy: the executor never shares storage with (or writes to) the source model."""
    return t.detach().clone()


def bn_affine(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``x·scale + shift`` per channel (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise NotImplementedError("deployment needs BatchNorm with running statistics (track_running_stats=True)")
    scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -bn.running_mean.detach() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    return scale.clone(), shift.clone()


class Grouped(NamedTuple):
    """A conv as a plain grouped conv: grouped input ``j`` reads original channel ``in_order[j]``,
    grouped output ``j`` is original channel ``out_pos[j]`` (``None`` = identity order)."""

    weight: Tensor
    groups: int
    in_order: Optional[Tensor]
    out_pos: Optional[Tensor]


def grouped(conv: Union[nn.Conv2d, DGConv2d]) -> Grouped:
    """The grouped form of a conv: DGConv2d through its own ``materialize()``, nn.Conv2d as it is."""
    if conv.dilation != (1, 1) or getattr(conv, "bias", None) is not None:
        raise NotImplementedError(f"deployment supports bias-free, undilated convolutions, got {conv}")
    module = conv.materialize() if isinstance(conv, DGConv2d) else conv
    if isinstance(module, PermutedGroupConv2d):
        inner = module[1]
        # module[2] maps original output o to grouped position index[o]; invert it.
        return Grouped(frozen(inner.weight), inner.groups, module[0].index.clone(), torch.argsort(module[2].index))
    return Grouped(frozen(module.weight), module.groups, None, None)


def stacked_rows(conv: Union[nn.Conv2d, DGConv2d]) -> Tuple[Tensor, Tensor]:
    """Per output channel, the input channels its group reads (``out × in/groups``, long) and the
    matching weight (``out × in/groups × kh × kw``), so that any subset ``a`` of outputs runs as one
    grouped conv (``groups = len(a)``) over ``x.index_select(0, index[a].flatten())``: each kept
    output with its own group's inputs, exactly ``aᵀ U 1`` multiply-accumulates per pixel and kernel tap.
    A DGConv2d by its learned mask ``U``, a grouped nn.Conv2d by its fixed contiguous groups."""
    if not isinstance(conv, DGConv2d):
        per_group, device = conv.in_channels // conv.groups, conv.weight.device
        group = torch.arange(conv.out_channels, device=device) // (conv.out_channels // conv.groups)
        return group[:, None] * per_group + torch.arange(per_group, device=device), frozen(conv.weight)
    u = conv.mask().detach() > 0
    per_out = int(u[0].sum())
    index = u.nonzero()[:, 1].view(conv.out_channels, per_out)  # row-major, so rows stay grouped
    weight = torch.gather(conv.weight.detach(), 1, index[:, :, None, None].expand(-1, -1, *conv.kernel_size))
    return index, weight.clone()


def conv_macs(out: Tensor, weight: Tensor) -> int:
    """MACs of one executed ``F.conv2d`` per sample: outputs × (inputs per group) × kernel × output pixels."""
    return out.shape[1] * weight.shape[1] * weight.shape[2] * weight.shape[3] * out.shape[2] * out.shape[3]


# ---------------------------------------------------------------------------------------------
# Per-sample kernels. oneDNN's direct convolution is slow for the shapes a gated layer produces
# (a few output channels, tiny grouped gate convs, weights that change every call); GEMM forms
# are several times faster and execute exactly the same multiply-accumulates, which the FLOP
# counter sees as mm/bmm of the conv's shape. Each returns (output, MACs).
# ---------------------------------------------------------------------------------------------


def kn2row_weight(weight: Tensor) -> Tensor:
    """A 3×3 weight (out × in/groups × 3 × 3) as (out, 9, in/groups), kernel flipped so that
    ``F.fold`` performs the shifted sum of :func:`conv3x3_kn2row`."""
    out_channels, per_group = weight.shape[:2]
    return weight.detach().flip(2, 3).reshape(out_channels, per_group, 9).transpose(1, 2).contiguous()


def conv3x3_kn2row(
    x: Tensor, weight: Tensor, height: int, width: int, constant: Optional[Tensor] = None
) -> Tuple[Tensor, int]:
    """Stride-1, zero-padded 3×3 conv of one sample as GEMM + col2im: ``x`` (in, H·W) with
    ``weight`` (out·9, in), or grouped: ``x`` (G, in/G, H·W) with ``weight`` (G, out/G·9, in/G);
    rows ordered (output, flipped kernel position) as :func:`kn2row_weight` gives them. Returns
    (out, H·W) and its MACs. Cheap when outputs are few: the GEMM output (9·out·H·W) is smaller
    than an im2col buffer (9·in·H·W).

    ``constant`` (out, 9), ungrouped only: what further input channels that are constant images
    add per GEMM row. col2im sums a row only where its kernel position falls inside the image, so
    this is exactly their zero-padded convolution, borders included, at no multiply-accumulate."""
    if weight.dim() == 3:
        z = torch.bmm(weight, x)
    elif constant is None:
        z = torch.mm(weight, x)
    else:
        z = torch.addmm(constant.view(-1, 1), weight, x)
    out = F.fold(z.view(-1, height * width), (height, width), 3, padding=1)
    return out.view(out.shape[0], -1), weight.numel() * height * width


def im2col_weight(weight: Tensor, groups: int = 1) -> Tensor:
    """A conv weight (out × in/groups × kh × kw) as (groups, out/groups, in/groups·kh·kw)."""
    return weight.detach().reshape(groups, weight.shape[0] // groups, -1).contiguous()


def conv_output_hw(height: int, width: int, kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    return (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1


def im2col_index(height: int, width: int, kernel: int, stride: int, padding: int, device=None) -> Tensor:
    """Where a conv's patches come from, computed once per input size: positions in the
    zero-padded image, flattened per channel, of every (kernel row, kernel column, output pixel).
    One index_select with it is about twice as fast as F.unfold, whose generic CPU kernel
    dominates at the sizes of the gates."""
    out_h, out_w = conv_output_hw(height, width, kernel, stride, padding)
    taps = torch.arange(kernel, device=device)
    rows = taps[:, None, None, None] + stride * torch.arange(out_h, device=device)[None, None, :, None]
    cols = taps[None, :, None, None] + stride * torch.arange(out_w, device=device)[None, None, None, :]
    return (rows * (width + 2 * padding) + cols).reshape(-1)


def conv_im2col(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], index: Tensor, kernel: int, stride: int, padding: int
) -> Tuple[Tensor, int]:
    """Grouped conv of one sample (C, H, W) as im2col + (b)mm, for small inputs (the stem, the
    gates). ``weight`` from :func:`im2col_weight`, ``bias`` (groups, out/groups, 1) or None,
    ``index`` from :func:`im2col_index` for this input size. Returns (out, H_out, W_out) and its MACs."""
    out_h, out_w = conv_output_hw(x.shape[1], x.shape[2], kernel, stride, padding)
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
    patches = x.reshape(x.shape[0], -1).index_select(1, index).view(weight.shape[0], weight.shape[2], -1)
    out = torch.bmm(weight, patches) if bias is None else torch.baddbmm(bias, weight, patches)
    return out.view(-1, out_h, out_w), weight.numel() * out_h * out_w
