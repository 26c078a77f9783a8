"""ACS-GN: the gate network of Adaptive Channel Skipping."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from acs.cost import conv_output_size
from acs.gates.base import SUMMARY_SUBSAMPLED, CostLayer, LogitGate, check_width, keep_logit, register_gate
from acs.ops import DGConv2d

#: The kinds of 3×3 convolution inside the gate: ACS-DG, and its two ablations.
CONVS = ("dgconv", "dense", "group")


@register_gate("acs")
class ACSGate(LogitGate):
    """``1×1 conv (C_in→w, stride 2) → DGConv 3×3 (w→w, stride 2) → BN → ReLU → DGConv 3×3 (w→w)
    → global average pool → 1×1 conv with bias (w→k) → sigmoid → 0.5 threshold (straight-through)``.

    ``conv="dense"`` uses plain 3×3 convolutions instead of DGConv2d, ``conv="group"`` fixed grouped
    ones with ``groups`` groups (the two ablations of ACS-DG inside the gate).
    ``init_keep`` sets the initial keep probability: the output bias starts at its logit.
    ``estimator`` (``ste`` or ``gumbel`` with ``temperature``) is how the mask is drawn in training,
    see :mod:`acs.ops.binary`; evaluation always thresholds at 0.5.
    """

    reads = SUMMARY_SUBSAMPLED
    keep_bias = "head.bias"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        init_keep: float = 0.9,
        conv: str = "dgconv",
        estimator: str = "ste",
        temperature: float = 1.0,
        groups: Optional[int] = None,
        detach_input: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature, detach_input)
        check_width(width)
        if conv not in CONVS:
            raise ValueError(f"gate.conv must be one of {', '.join(CONVS)}, got '{conv}'")
        if (conv == "group") != (groups is not None):
            raise ValueError(
                f"gate.groups is the group count of gate.conv=group (and only of it); "
                f"got conv '{conv}', groups {groups}"
            )
        if conv == "group" and (groups < 1 or width % groups):
            raise ValueError(f"gate.groups must divide gate.width={width}, got {groups}")
        self.reduce = nn.Conv2d(in_channels, width, 1, stride=2, bias=False)
        self.conv_a = self._conv3x3(conv, width, 2, groups)
        self.bn = nn.BatchNorm2d(width)
        self.conv_b = self._conv3x3(conv, width, 1, groups)
        self.head = nn.Conv2d(width, out_channels, 1, bias=True)
        # The head keeps PyTorch's default weight initialisation, so decisions depend on the input and
        # differ between channels from the start; only the bias is set, to the logit of ``init_keep``.
        nn.init.constant_(self.head.bias, keep_logit(init_keep))

    @staticmethod
    def _conv3x3(conv: str, width: int, stride: int, groups: Optional[int]) -> nn.Module:
        if conv == "dgconv":
            return DGConv2d(width, width, 3, stride=stride, padding=1, bias=False)
        return nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False, groups=groups or 1)

    def score(self, summary: Tensor) -> Tensor:
        # A 1×1 stride-2 conv is a 1×1 conv of every other pixel (the summary); on CPU oneDNN runs
        # the strided form about 3× slower. Likewise the head acts on a pooled vector, where linear
        # is cheaper.
        h = F.conv2d(summary, self.reduce.weight)
        h = self.conv_b(self.bn(self.conv_a(h)).relu())
        return F.linear(h.mean((2, 3)), self.head.weight.flatten(1), self.head.bias)

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        reduced = conv_output_size(self.reduce, in_hw)
        hw_a = conv_output_size(self.conv_a, reduced)
        return [
            (self.reduce, reduced, True),
            (self.conv_a, hw_a, False),
            (self.conv_b, conv_output_size(self.conv_b, hw_a), False),
            (self.head, (1, 1), False),
        ]
