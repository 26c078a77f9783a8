"""DenseNets for CIFAR-sized input, every dense layer gateable (ACS-GN)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.cost import Live, MacMeter
from acs.cost.macs import LiveLike
from acs.gates import GateOutput, GateSpec, create_gate, run_gate, summarize
from acs.gates.base import SUMMARY_INPUT
from acs.gates.scaling import scale_channels
from acs.models.base import AcsModel
from acs.models.layers import conv3x3
from acs.models.registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-(1×1 bottleneck-BN-ReLU)-3×3 producing ``growth`` channels, multiplied by the
    gate's keep-mask (and by its ``scale`` where the gate has one, e.g. FBS) before they join the
    concatenation."""

    def __init__(
        self,
        in_channels: int,
        growth: int,
        bottleneck: Optional[int],
        conv: str,
        gate: GateSpec,
        groups: Optional[int] = None,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        if bottleneck:
            self.conv1 = nn.Conv2d(in_channels, bottleneck, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(bottleneck)
        else:
            self.conv1, self.norm2 = None, None
        self.conv2 = conv3x3(conv, bottleneck or in_channels, growth, groups=groups)
        self.gate = create_gate(gate, in_channels, growth)

    def forward(
        self, x: Tensor, live: LiveLike, meter: MacMeter, summary: Optional[Tensor] = None, reads: Optional[int] = None
    ) -> Tuple[Tensor, Optional[GateOutput], Optional[Tensor]]:
        """The new channels, the gate's decision and, where ``reads`` is given, the summary
        (:func:`acs.gates.summarize`) of the new channels. ``live``: which channels of ``x`` are
        live (an :class:`acs.cost.Live`, an N × C tensor, or ``None`` for all); ``summary``: the
        gate's summary of ``x`` where the caller keeps one (see :meth:`DenseNet.run`)."""
        decision = run_gate(self.gate, x, meter, live, summary)
        mask = None if decision is None else decision.mask
        h = self.norm1(x).relu()
        live_mid = None
        if self.conv1 is not None:
            h = self.conv1(h)
            # The bottleneck is needed as soon as one output channel is kept, and not at all otherwise.
            if mask is not None:
                live_mid = Live.any_kept(mask, self.conv1.out_channels)
            meter.layer(self.conv1, h.shape[-2:], live_in=live, live_out=live_mid)
            h = self.norm2(h).relu()
        else:
            live_mid = live
        h = self.conv2(h)
        meter.layer(self.conv2, h.shape[-2:], live_in=live_mid, live_out=None if mask is None else Live.kept(mask))
        if mask is None:
            return h, decision, None if reads is None else summarize(h, reads)
        new, piece = scale_channels(h, mask if decision.scale is None else decision.scale, reads)
        return new, decision, piece


class Transition(nn.Module):
    """BN-ReLU-1×1 conv-2×2 average pool between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor, live: LiveLike, meter: MacMeter) -> Tensor:
        h = self.conv(self.norm(x).relu())
        meter.layer(self.conv, h.shape[-2:], live_in=live)
        return self.pool(h)


class DenseNet(AcsModel):
    """DenseNet with a 3×3 stem (CIFAR-style), ``len(block_layers)`` dense blocks and transitions.

    ``bottleneck`` (a multiple of ``growth_rate``, or ``None``) adds the 1×1 bottleneck of the
    BC form; ``compression`` scales the channels at every transition. ``gate`` picks the gate of
    every dense layer (``"none"`` gives the plain network); ``conv`` the kind of 3×3 convolution,
    ``groups`` its group count when ``conv="group"`` (a fixed grouping, the static baseline).
    """

    def __init__(
        self,
        growth_rate: int = 12,
        block_layers: Sequence[int] = (12, 12, 12),
        stem_channels: int = 16,
        bottleneck: Optional[int] = None,
        compression: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 3,
        gate: GateSpec = "acs",
        conv: str = "dense",
        groups: Optional[int] = None,
    ):
        super().__init__()
        if growth_rate < 1:
            raise ValueError(f"model.growth_rate must be >= 1, got {growth_rate}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must lie in (0, 1], got {compression}")
        if groups is not None and conv != "group":
            raise ValueError(f"groups sets the fixed group count of conv 'group', not of conv '{conv}'")
        self.stem = nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        channels = stem_channels
        width = bottleneck * growth_rate if bottleneck else None
        for index, depth in enumerate(block_layers):
            layers = nn.ModuleList()
            for _ in range(depth):
                layers.append(DenseLayer(channels, growth_rate, width, conv, gate, groups))
                channels += growth_rate
            self.blocks.append(layers)
            if index < len(block_layers) - 1:
                out = int(channels * compression)
                self.transitions.append(Transition(channels, out))
                channels = out
        self.norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

    def run(self, x: Tensor, meter: MacMeter) -> Tuple[Tensor, List[GateOutput]]:
        x = self.stem(x)
        meter.layer(self.stem, x.shape[-2:])
        decisions: List[GateOutput] = []
        live = None
        for index, block in enumerate(self.blocks):
            # What the block's gates read of the growing input, extended layer by layer (see
            # acs.gates.summarize); gates that read the input itself need no copy of it.
            gate_reads = {layer.gate.reads for layer in block if layer.gate is not None and not meter.dense}
            reads = gate_reads.pop() if len(gate_reads) == 1 else SUMMARY_INPUT
            summary = None if reads == SUMMARY_INPUT else summarize(x, reads)
            for position, layer in enumerate(block):
                # The last layer's new channels are read by no gate of the block.
                extend = summary is not None and position < len(block) - 1
                new, decision, piece = layer(x, live, meter, summary, reads if extend else None)
                mask = None if decision is None else decision.mask
                live = Live.extend(live, x.shape[1], mask, new.shape[1])
                x = torch.cat([x, new], 1)
                if extend:
                    summary = torch.cat([summary, piece], 1)
                if decision is not None:
                    decisions.append(decision)
            if index < len(self.transitions):
                x = self.transitions[index](x, live, meter)
                live = None
        x = self.norm(x).relu().mean((2, 3))
        meter.layer(self.fc, live_in=live)
        return self.fc(x), decisions


@register_model
def densenet40(
    num_classes: int = 10,
    in_channels: int = 3,
    gate: GateSpec = "acs",
    conv: str = "dense",
    groups: Optional[int] = None,
    growth_rate: int = 12,
) -> DenseNet:
    """DenseNet (L=40, k=12) for CIFAR: 16-channel stem, three blocks of 12 layers, no bottleneck.
    ``conv="group", groups=4`` is the fixed-group baseline (every layer's inputs are a multiple of 4);
    a smaller ``growth_rate`` the uniformly thinner one (the stem keeps its 16 channels, as in the
    DenseNet paper, where it does not depend on k)."""
    return DenseNet(growth_rate, (12, 12, 12), 16, None, 1.0, num_classes, in_channels, gate, conv, groups)


@register_model
def densenet41_acs(
    num_classes: int = 10,
    in_channels: int = 3,
    gate: GateSpec = "acs",
    conv: str = "dgconv",
    groups: Optional[int] = None,
    growth_rate: int = 32,
) -> DenseNet:
    """The ACS paper's DenseNet: 64-channel stem, growth 32, bottleneck 2k, blocks (6, 6, 6),
    compression 0.5, DGConv2d 3×3 convolutions; with a 3×3 stem so that it runs on 32×32 input.
    ``growth_rate`` thins every layer (and its 2k bottleneck); the stem stays at 64."""
    return DenseNet(growth_rate, (6, 6, 6), 64, 2, 0.5, num_classes, in_channels, gate, conv, groups)


@register_model
def densenet_bc100(
    num_classes: int = 10,
    in_channels: int = 3,
    gate: GateSpec = "acs",
    conv: str = "dense",
    groups: Optional[int] = None,
    growth_rate: int = 12,
) -> DenseNet:
    """DenseNet-BC (L=100, k=12): bottleneck 4k, compression 0.5, blocks (16, 16, 16), a 2k-channel
    stem (so ``growth_rate`` thins the stem too, as DenseNet-BC defines it)."""
    return DenseNet(growth_rate, (16, 16, 16), 2 * growth_rate, 4, 0.5, num_classes, in_channels, gate, conv, groups)
