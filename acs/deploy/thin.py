"""Static channel pruning made physical: a DenseNet whose gates are input-independent
(``gate=static``, or none) becomes an ungated DenseNet with smaller convolutions.

Every dense layer keeps only the output channels its gate keeps in evaluation, and every later
layer reads only the channels that survive. A dropped channel is exactly 0 in the gated model's
concatenation, so after the next BatchNorm-ReLU it is the constant ``relu(shift)`` of that BN
(:func:`acs.deploy.fold.bn_affine`); its contribution is folded in exactly: into the bias of a 1×1
convolution or of the classifier, and for a zero-padded 3×3 convolution into a per-position bias map
(the convolution of a constant image, which is smaller at the borders), precomputed for the input
size given at conversion. The thin model is an :class:`~acs.models.base.AcsModel`: its
``Output.macs`` come from its own layer shapes, equal the gated model's evaluation ``Output.macs``,
and are what ``torch.utils.flop_counter`` counts.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs.cost import MacMeter, conv_output_size
from acs.deploy.fold import bn_affine
from acs.gates import GateOutput, StaticGate
from acs.models.base import AcsModel
from acs.models.densenet import DenseLayer, DenseNet, Transition


def _norm(bn: nn.BatchNorm2d, live: Tensor) -> nn.BatchNorm2d:
    """``bn`` restricted to the channels ``live`` (indices), in evaluation mode."""
    thin = nn.BatchNorm2d(len(live), eps=bn.eps, momentum=bn.momentum).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(thin, name).data.copy_(getattr(bn, name).detach()[live])
    return thin


def _dead_fold(bn: nn.BatchNorm2d, weight: Tensor, dead: Tensor) -> Optional[Tensor]:
    """What the dropped input channels ``dead`` add through ``weight`` (out × in × kh × kw) after
    ``bn`` and ReLU, as one constant input channel's weight (out × 1 × kh × kw); ``None`` when
    nothing is dropped."""
    if len(dead) == 0:
        return None
    value = bn_affine(bn)[1][dead].relu()
    return (weight.detach()[:, dead] * value[None, :, None, None]).sum(1, keepdim=True)


def _conv(conv: nn.Conv2d, live: Tensor, kept: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> nn.Conv2d:
    """A copy of ``conv`` reading the input channels ``live`` and computing the outputs ``kept``
    (all when ``None``), with ``bias`` (the folded dropped inputs) when one is given."""
    if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.bias is not None:
        raise NotImplementedError(
            f"to_thin thins plain bias-free convolutions (model conv=dense), got {conv}; "
            "a learned or fixed grouping cannot lose single input channels and stay grouped"
        )
    weight = conv.weight.detach()[:, live]
    if kept is not None:
        weight, bias = weight[kept], None if bias is None else bias[kept]
    thin = nn.Conv2d(
        weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, bias=bias is not None
    )
    thin.weight.data.copy_(weight)
    if bias is not None:
        thin.bias.data.copy_(bias)
    return thin


class ThinDenseLayer(nn.Module):
    """A dense layer on its live inputs, computing its kept outputs; ``border`` (kept × H × W) is
    what its dropped inputs add through a zero-padded 3×3 convolution (no bottleneck)."""

    def __init__(
        self, norm1: nn.Module, conv1: Optional[nn.Module], norm2: Optional[nn.Module], conv2: nn.Module,
        border: Optional[Tensor],
    ) -> None:
        super().__init__()
        self.norm1, self.conv1, self.norm2, self.conv2 = norm1, conv1, norm2, conv2
        self.register_buffer("border", border)

    def forward(self, x: Tensor, meter: MacMeter) -> Tensor:
        h = self.norm1(x).relu()
        if self.conv1 is not None:
            h = self.conv1(h)
            meter.layer(self.conv1, h.shape[-2:])
            h = self.norm2(h).relu()
        h = self.conv2(h)
        meter.layer(self.conv2, h.shape[-2:])
        if self.border is not None:
            if h.shape[-2:] != self.border.shape[-2:]:
                raise ValueError(
                    f"this thin model was built for inputs whose dense layers run at {tuple(self.border.shape[-2:])}, "
                    f"got {tuple(h.shape[-2:])}: convert it again with that input size"
                )
            h = h + self.border
        return h


class ThinTransition(nn.Module):
    """BN-ReLU-1×1 conv-2×2 average pool on the live channels (dropped ones are the conv's bias)."""

    def __init__(self, norm: nn.Module, conv: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.norm, self.conv, self.pool = norm, conv, pool

    def forward(self, x: Tensor, meter: MacMeter) -> Tensor:
        h = self.conv(self.norm(x).relu())
        meter.layer(self.conv, h.shape[-2:])
        return self.pool(h)


class ThinDenseNet(AcsModel):
    """The ungated DenseNet that :func:`to_thin` builds: dense layers of varying width (a layer that
    keeps nothing is gone), no gates."""

    def __init__(
        self, stem: nn.Module, blocks: List[List[ThinDenseLayer]], transitions: List[ThinTransition],
        norm: nn.Module, fc: nn.Linear,
    ) -> None:
        super().__init__()
        self.stem, self.norm, self.fc = stem, norm, fc
        self.blocks = nn.ModuleList(nn.ModuleList(block) for block in blocks)
        self.transitions = nn.ModuleList(transitions)

    def run(self, x: Tensor, meter: MacMeter) -> Tuple[Tensor, List[GateOutput]]:
        x = self.stem(x)
        meter.layer(self.stem, x.shape[-2:])
        for index, block in enumerate(self.blocks):
            for layer in block:
                x = torch.cat([x, layer(x, meter)], 1)
            if index < len(self.transitions):
                x = self.transitions[index](x, meter)
        x = self.norm(x).relu().mean((2, 3))
        meter.layer(self.fc)
        return self.fc(x), []


def _kept(layer: DenseLayer) -> Tensor:
    if layer.gate is None:
        return torch.arange(layer.conv2.out_channels, device=layer.norm1.weight.device)
    if type(layer.gate) is not StaticGate:
        raise ValueError(
            f"to_thin needs input-independent gates (gate=static or none), got {type(layer.gate).__name__}: "
            "a gate that decides per sample deploys with acs.deploy.to_dynamic"
        )
    return layer.gate.kept()


def _thin_layer(layer: DenseLayer, live: Tensor, dead: Tensor, kept: Tensor, hw: Sequence[int]) -> ThinDenseLayer:
    if layer.conv1 is None:
        fold = _dead_fold(layer.norm1, layer.conv2.weight, dead)
        conv2 = _conv(layer.conv2, live, kept)
        border = None
        if fold is not None:
            ones = fold.new_ones(1, 1, *hw)
            border = F.conv2d(ones, fold[kept], stride=conv2.stride, padding=conv2.padding)[0]
        return ThinDenseLayer(_norm(layer.norm1, live), None, None, conv2, border)
    fold = _dead_fold(layer.norm1, layer.conv1.weight, dead)
    conv1 = _conv(layer.conv1, live, bias=None if fold is None else fold.flatten())
    conv2 = _conv(layer.conv2, torch.arange(layer.conv2.in_channels, device=live.device), kept)
    return ThinDenseLayer(_norm(layer.norm1, live), conv1, copy.deepcopy(layer.norm2), conv2, None)


def _thin_transition(transition: Transition, live: Tensor, dead: Tensor) -> ThinTransition:
    fold = _dead_fold(transition.norm, transition.conv.weight, dead)
    conv = _conv(transition.conv, live, bias=None if fold is None else fold.flatten())
    return ThinTransition(_norm(transition.norm, live), conv, copy.deepcopy(transition.pool))


@torch.no_grad()
def to_thin(model: DenseNet, input_size: Sequence[int]) -> ThinDenseNet:
    """The physically thinner ungated DenseNet equivalent, in evaluation, to ``model`` (whose gates
    must all be ``static`` or absent) on inputs of ``input_size`` (C, H, W). ``model`` is left as it
    is; the result is in evaluation mode, on ``model``'s device."""
    if not isinstance(model, DenseNet):
        raise TypeError(f"to_thin converts DenseNet models, got {type(model).__name__}")
    hw = conv_output_size(model.stem, input_size[-2:])
    channels = model.stem.out_channels
    blocks, transitions = [], []
    for index, block in enumerate(model.blocks):
        alive = torch.ones(channels, dtype=torch.bool, device=model.stem.weight.device)
        thin_block = []
        for layer in block:
            kept = _kept(layer)
            live, dead = alive.nonzero().flatten(), (~alive).nonzero().flatten()
            if len(kept):
                thin_block.append(_thin_layer(layer, live, dead, kept, hw))
            new = torch.zeros(layer.conv2.out_channels, dtype=torch.bool, device=alive.device)
            alive = torch.cat([alive, new.index_fill_(0, kept, True)])
        blocks.append(thin_block)
        live, dead = alive.nonzero().flatten(), (~alive).nonzero().flatten()
        if index < len(model.transitions):
            transition = model.transitions[index]
            transitions.append(_thin_transition(transition, live, dead))
            channels = transition.conv.out_channels
            hw = [size // 2 for size in hw]
    fc = nn.Linear(len(live), model.fc.out_features)
    fc.weight.data.copy_(model.fc.weight.detach()[:, live])
    fold = _dead_fold(model.norm, model.fc.weight[:, :, None, None], dead)
    fc.bias.data.copy_(model.fc.bias.detach() + (0 if fold is None else fold.flatten()))
    thin = ThinDenseNet(copy.deepcopy(model.stem), blocks, transitions, _norm(model.norm, live), fc)
    return thin.to(model.stem.weight.device).eval()
