"""Fixed channel permutations, used to turn an interleaved grouping into a plain grouped conv."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelPermute(nn.Module):
    """Reorders channels: ``out[:, i] = x[:, index[i]]``."""

    def __init__(self, index: Tensor) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"channels={self.index.numel()}"


class PermutedGroupConv2d(nn.Sequential):
    """``ChannelPermute → grouped nn.Conv2d → ChannelPermute``: a grouped convolution whose groups
    are interleaved in the original channel order. It exposes the conv's shape attributes so that
    the cost model treats it like any other convolution."""

    def __init__(self, input_order: Tensor, conv: nn.Conv2d, output_order: Tensor) -> None:
        super().__init__(ChannelPermute(input_order), conv, ChannelPermute(output_order))
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, name, getattr(conv, name))

    @property
    def weight(self) -> Tensor:
        return self[1].weight

    def connectivity(self) -> Tensor:
        """Binary out × in matrix in the original channel order."""
        conv = self[1]
        block = torch.ones(conv.out_channels // conv.groups, conv.in_channels // conv.groups)
        grouped = torch.block_diag(*[block] * conv.groups)  # in the permuted order
        rows = self[2].index.cpu()  # original output o is permuted output rows[o]
        cols = torch.argsort(self[0].index.cpu())  # original input i is permuted input cols[i]
        return grouped[rows][:, cols]
