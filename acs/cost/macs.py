"""The cost model: per-sample multiply-accumulates (MACs) of every Conv2d and Linear, from the masks.

A layer with connectivity ``U`` (out × in), per-sample live inputs ``l`` and active outputs ``a``
executes ``kh·kw·H_out·W_out · aᵀ U l`` MACs: a channel skipped upstream is folded into a constant at
deployment and costs nothing here, a skipped output is never computed. Everything is accumulated in
float64, because MAC totals of real networks exceed the integers float32 represents exactly.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from acs.ops import DGConv2d, PermutedGroupConv2d

Layer = Union[nn.Conv2d, nn.Linear, DGConv2d, PermutedGroupConv2d]
MACS_DTYPE = torch.float64


def conv_output_size(module: Union[nn.Conv2d, DGConv2d], hw: Sequence[int]) -> Tuple[int, int]:
    """Spatial size of ``module``'s output for an input of spatial size ``hw``."""
    return tuple(
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(
            hw, module.padding, module.dilation, module.kernel_size, module.stride
        )
    )


def _shape(module: Layer) -> Tuple[int, int, int, int]:
    """(out channels, in channels, kernel area, fixed groups) of a layer."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features, 1, 1
    kh, kw = module.kernel_size
    groups = 1 if isinstance(module, DGConv2d) else module.groups
    return module.out_channels, module.in_channels, kh * kw, groups


def connectivity(module: Layer, dense: bool = False) -> Tensor:
    """Binary out × in matrix (float64): which input channels each output channel reads.

    ``dense=True`` treats a DGConv2d as fully connected (the reference cost of DESIGN.md); a fixed
    grouped conv keeps its groups, since those are part of the backbone.
    """
    out_ch, in_ch, _, groups = _shape(module)
    device = module.weight.device
    if isinstance(module, DGConv2d) and not dense:
        return module.mask().to(MACS_DTYPE)
    if isinstance(module, PermutedGroupConv2d):
        return module.connectivity().to(device=device, dtype=MACS_DTYPE)
    block = torch.ones(out_ch // groups, in_ch // groups, dtype=MACS_DTYPE, device=device)
    return torch.block_diag(*[block] * groups) if groups > 1 else block


def layer_macs(
    module: Layer,
    out_hw: Sequence[int] = (1, 1),
    live_in: Optional[Tensor] = None,
    live_out: Optional[Tensor] = None,
    dense: bool = False,
) -> Tensor:
    """Per-sample MACs of one layer.

    ``live_in`` (N × in) and ``live_out`` (N × out) are 0/1 masks, differentiable where gates act;
    ``None`` means every channel. Returns a tensor of shape (N,), or a scalar when both are ``None``.
    ``dense=True`` gives the reference cost: every channel live, every DGConv2d fully connected.
    """
    out_ch, in_ch, area, groups = _shape(module)
    positions = area * int(out_hw[0]) * int(out_hw[1])
    if dense:
        live_in = live_out = None
    learned = isinstance(module, DGConv2d) and not dense
    if not learned and (groups == 1 or (live_in is None and live_out is None)):
        # A full (or fixed-group, all-live) connection factorises into outputs·inputs/groups.
        outs = live_out.to(MACS_DTYPE).sum(-1) if live_out is not None else out_ch
        ins = live_in.to(MACS_DTYPE).sum(-1) if live_in is not None else in_ch
        return torch.as_tensor(outs * ins * positions / groups, dtype=MACS_DTYPE, device=module.weight.device)
    u = connectivity(module, dense)
    if live_in is None and live_out is None:
        return u.sum() * positions
    if live_out is not None:
        u = live_out.to(MACS_DTYPE) @ u  # N × in: how many active outputs read each input
    if live_in is not None:
        u = u * live_in.to(MACS_DTYPE)
    return u.sum(-1) * positions


class MacMeter:
    """Accumulates per-sample MACs during one forward pass.

    ``dense=True`` measures the reference cost: gates are not run, every channel is live and every
    DGConv2d counts as fully connected.
    """

    def __init__(self, batch: int, device: Union[torch.device, str, None] = None, dense: bool = False):
        self.dense = dense
        self.total = torch.zeros(batch, dtype=MACS_DTYPE, device=device)

    def add(self, macs: Union[Tensor, float]) -> None:
        self.total = self.total + macs

    def layer(
        self,
        module: Layer,
        out_hw: Sequence[int] = (1, 1),
        live_in: Optional[Tensor] = None,
        live_out: Optional[Tensor] = None,
    ) -> None:
        self.add(layer_macs(module, out_hw, live_in, live_out, dense=self.dense))
