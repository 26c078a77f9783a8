"""Building blocks shared by the model families."""

from __future__ import annotations

from typing import Optional

from torch import nn

from acs.ops import DGConv2d

CONV_KINDS = ("dense", "dgconv", "group")


def conv3x3(kind: str, in_channels: int, out_channels: int, stride: int = 1, groups: Optional[int] = None) -> nn.Module:
    """A bias-free 3×3 convolution of the requested ``kind``: ``dense`` (every input to every output),
    ``dgconv`` (learned grouping, DGConv2d) or ``group`` (a fixed grouped conv with ``groups`` groups)."""
    if kind == "dense":
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    if kind == "dgconv":
        return DGConv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    if kind == "group":
        if not groups or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"conv 'group' needs a group count dividing {in_channels} and {out_channels}, got {groups}"
            )
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, groups=groups)
    raise ValueError(f"unknown conv kind '{kind}'; available: {', '.join(CONV_KINDS)}")
