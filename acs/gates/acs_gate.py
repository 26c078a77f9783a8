"""ACS-GN: the gate network of Adaptive Channel Skipping."""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from acs.cost import conv_output_size, layer_macs
from acs.gates.base import LogitGate, keep_logit, register_gate
from acs.ops import DGConv2d


@register_gate("acs")
class ACSGate(LogitGate):
    """``1×1 conv (C_in→w, stride 2) → DGConv 3×3 (w→w, stride 2) → BN → ReLU → DGConv 3×3 (w→w)
    → global average pool → 1×1 conv with bias (w→k) → sigmoid → 0.5 threshold (straight-through)``.

    ``conv="dense"`` uses plain 3×3 convolutions instead of DGConv2d (the ACS-DG ablation).
    ``init_keep`` sets the initial keep probability: the output bias starts at its logit.
    ``estimator`` (``ste`` or ``gumbel`` with ``temperature``) is how the mask is drawn in training,
    see :mod:`acs.ops.binary`; evaluation always thresholds at 0.5.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        init_keep: float = 0.9,
        conv: str = "dgconv",
        estimator: str = "ste",
        temperature: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature)
        if width < 1:
            raise ValueError(f"gate width must be positive, got {width}")
        if conv not in ("dgconv", "dense"):
            raise ValueError(f"gate conv must be 'dgconv' or 'dense', got '{conv}'")
        conv3x3 = DGConv2d if conv == "dgconv" else nn.Conv2d
        self.reduce = nn.Conv2d(in_channels, width, 1, stride=2, bias=False)
        self.conv_a = conv3x3(width, width, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv_b = conv3x3(width, width, 3, stride=1, padding=1, bias=False)
        self.head = nn.Conv2d(width, out_channels, 1, bias=True)
        # The head keeps PyTorch's default weight initialisation, so decisions depend on the input and
        # differ between channels from the start; only the bias is set, to the logit of ``init_keep``.
        nn.init.constant_(self.head.bias, keep_logit(init_keep))

    def logits(self, x: Tensor) -> Tensor:
        # A 1×1 stride-2 conv is a 1×1 conv of every other pixel; on CPU oneDNN runs the strided
        # form about 3× slower. Likewise the head acts on a pooled vector, where linear is cheaper.
        h = F.conv2d(x[:, :, ::2, ::2], self.reduce.weight)
        h = self.conv_b(self.bn(self.conv_a(h)).relu())
        return F.linear(h.mean((2, 3)), self.head.weight.flatten(1), self.head.bias)

    def macs(self, in_hw: Sequence[int], live_in: Optional[Tensor] = None) -> Tensor:
        hw = conv_output_size(self.reduce, in_hw)
        total = layer_macs(self.reduce, hw, live_in=live_in)
        hw = conv_output_size(self.conv_a, hw)
        total = total + layer_macs(self.conv_a, hw)
        total = total + layer_macs(self.conv_b, conv_output_size(self.conv_b, hw))
        return total + layer_macs(self.head)
