"""G-ResNeXt: ResNeXt bottleneck networks whose grouped 3×3 conv is a DGConv2d (learned grouping).

The layout is torchvision's ResNet v1.5 (stride on the 3×3 conv, ``downsample`` = 1×1 conv + BN) and
the parameter names are torchvision's, so its ImageNet ResNeXt weights map directly
(:func:`load_torchvision_resnext`). The CIFAR variants are the ResNeXt paper's ResNeXt-29.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.cost import MacMeter
from acs.gates import GateOutput
from acs.models.base import AcsModel
from acs.models.layers import conv3x3
from acs.models.registry import register_model
from acs.ops import DGConv2d

EXPANSION = 4


class Bottleneck(nn.Module):
    """1×1 → 3×3 (DGConv2d or dense, carries the stride) → 1×1, each followed by BN, plus the shortcut."""

    def __init__(self, in_channels: int, planes: int, width: int, stride: int, conv: str, cardinality: int):
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(conv, width, width, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor, meter: MacMeter) -> Tensor:
        h = self.conv1(x)
        meter.layer(self.conv1, h.shape[-2:])
        h = self.bn1(h).relu()
        h = self.conv2(h)
        meter.layer(self.conv2, h.shape[-2:])
        h = self.bn2(h).relu()
        h = self.conv3(h)
        meter.layer(self.conv3, h.shape[-2:])
        h = self.bn3(h)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample[0](x)
            meter.layer(self.downsample[0], shortcut.shape[-2:])
            shortcut = self.downsample[1](shortcut)
        return (h + shortcut).relu()


class GResNeXt(AcsModel):
    """ResNeXt with ``len(layers)`` stages of bottlenecks; stage ``i`` has 3×3 width
    ``cardinality · base_width · 2^i`` and ``256 · 2^i`` output channels.

    ``stem="imagenet"``: 7×7 stride-2 conv and 3×3 max pool; ``stem="cifar"``: one 3×3 conv.
    With ``conv="dgconv"`` the cardinality only sets the width: the grouping itself is learned
    (``conv="group"`` gives the plain ResNeXt with ``cardinality`` fixed groups, ``conv="dense"`` the fully
    connected 3×3 conv). No per-sample gating, so ``masks`` is empty.
    """

    def __init__(
        self,
        layers: Sequence[int],
        cardinality: int,
        base_width: int,
        stem: str = "imagenet",
        num_classes: int = 1000,
        in_channels: int = 3,
        conv: str = "dgconv",
    ):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem '{stem}'; available: imagenet, cifar")
        self.cardinality, self.base_width, self.stem_type = cardinality, base_width, stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: Optional[nn.Module] = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
            self.maxpool = None
        self.bn1 = nn.BatchNorm2d(64)
        channels = 64
        self.stages: List[str] = []
        for index, depth in enumerate(layers):
            planes = 64 * 2**index
            # torchvision's formula, so that 32×4d and 32×8d give its widths exactly.
            width = int(planes * (base_width / 64.0)) * cardinality
            blocks = nn.ModuleList()
            for block in range(depth):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(Bottleneck(channels, planes, width, stride, conv, cardinality))
                channels = planes * EXPANSION
            name = f"layer{index + 1}"
            self.add_module(name, blocks)
            self.stages.append(name)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        for module in self.modules():
            # torchvision's initialisation, so a from-scratch G-ResNeXt trains like its ResNeXt.
            if isinstance(module, (nn.Conv2d, DGConv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def run(self, x: Tensor, meter: MacMeter) -> Tuple[Tensor, List[GateOutput]]:
        x = self.conv1(x)
        meter.layer(self.conv1, x.shape[-2:])
        x = self.bn1(x).relu()
        if self.maxpool is not None:
            x = self.maxpool(x)
        for name in self.stages:
            for block in getattr(self, name):
                x = block(x, meter)
        x = x.mean((2, 3))
        meter.layer(self.fc)
        return self.fc(x), []


def _block_diagonal(weight: Tensor, groups: int, in_channels: int) -> Tensor:
    """Full ``out × in × kh × kw`` weight of a grouped conv weight ``out × in/groups × kh × kw``."""
    out_channels, in_per_group = weight.shape[:2]
    if in_per_group * groups != in_channels or out_channels % groups:
        raise ValueError(f"grouped weight {tuple(weight.shape)} does not fit {groups} groups of {in_channels} inputs")
    full = weight.new_zeros(out_channels, in_channels, *weight.shape[2:])
    out_per_group = out_channels // groups
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        full[rows, g * in_per_group:(g + 1) * in_per_group] = weight[rows]
    return full


@torch.no_grad()
def load_torchvision_resnext(model: GResNeXt, state_dict: Mapping[str, Tensor]) -> GResNeXt:
    """Copies a torchvision ResNeXt ``state_dict`` into an ImageNet-shaped ``model`` so that both
    compute the same function.

    Every key copies directly except each grouped ``conv2.weight`` (``width × width/groups × 3 × 3``),
    which becomes the block-diagonal full weight (zeros off the blocks); the DGConv2d gates keep
    their tiny magnitude and only get signs, so that ``mask()`` is torchvision's contiguous
    block diagonal. When ``model`` has other than 1000 classes (the fc shape differs), the fc is
    left at its initialisation. Any other missing, unexpected or mis-shaped key raises ValueError.
    """
    own = model.state_dict()
    gate_keys = {name + ".gates" for name, m in model.named_modules() if isinstance(m, DGConv2d)}
    missing = sorted(set(own) - set(state_dict) - gate_keys)
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not fit {type(model).__name__}: missing keys {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' …' if len(unexpected) > 8 else ''}"
        )
    modules = dict(model.named_modules())
    for key, value in state_dict.items():
        target = own[key]
        module = modules[key.rpartition(".")[0]]
        # Only a bottleneck's 3×3 is grouped in torchvision; a stem that does not fit must fail.
        if key.endswith(".conv2.weight") and value.shape != target.shape and value.ndim == 4:
            groups = module.in_channels // max(int(value.shape[1]), 1)
            if groups > 1 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
                target.copy_(_block_diagonal(value, groups, module.in_channels))
                if isinstance(module, DGConv2d):
                    module.set_contiguous_groups(groups)
                continue
        if key.startswith("fc.") and value.shape != target.shape:
            continue  # another number of classes: the classifier stays at its initialisation
        if value.shape != target.shape:
            raise ValueError(f"{key}: torchvision shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
        target.copy_(value)
    return model


_TORCHVISION_WEIGHTS = {
    "g_resnext50": "ResNeXt50_32X4D_Weights",
    "g_resnext101": "ResNeXt101_32X8D_Weights",
}


def torchvision_state_dict(name: str) -> Dict[str, Tensor]:
    """torchvision's IMAGENET1K_V1 weights for ``name``, from the torch hub cache or downloaded."""
    import torchvision.models

    weights = getattr(torchvision.models, _TORCHVISION_WEIGHTS[name]).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # offline, blocked, or a corrupt cache file: all need the same fix
        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        filename = os.path.basename(weights.url)
        raise RuntimeError(
            f"cannot load pretrained weights for {name}: {type(error).__name__}: {error}. "
            f"Download {weights.url} and place it as {filename} in {folder}"
        ) from error


def _imagenet(name: str, layers: Sequence[int], base_width: int, num_classes: int, in_channels: int,
              pretrained: bool, conv: str) -> GResNeXt:
    # Weights first: offline, the error comes before seconds spent initialising a model.
    state_dict = torchvision_state_dict(name) if pretrained else None
    model = GResNeXt(layers, 32, base_width, "imagenet", num_classes, in_channels, conv)
    if state_dict is not None:
        load_torchvision_resnext(model, state_dict)
    return model


@register_model
def g_resnext50(
    num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False, conv: str = "dgconv"
) -> GResNeXt:
    """G-ResNeXt-50 (32×4d): layers (3, 4, 6, 3), 3×3 widths 128…1024. ``pretrained`` loads
    torchvision's ResNeXt50_32X4D IMAGENET1K_V1 weights (fc only when ``num_classes=1000``)."""
    return _imagenet("g_resnext50", (3, 4, 6, 3), 4, num_classes, in_channels, pretrained, conv)


@register_model
def g_resnext101(
    num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False, conv: str = "dgconv"
) -> GResNeXt:
    """G-ResNeXt-101 (32×8d): layers (3, 4, 23, 3), 3×3 widths 256…2048. ``pretrained`` loads
    torchvision's ResNeXt101_32X8D IMAGENET1K_V1 weights (fc only when ``num_classes=1000``)."""
    return _imagenet("g_resnext101", (3, 4, 23, 3), 8, num_classes, in_channels, pretrained, conv)


@register_model
def g_resnext29_8x64d(num_classes: int = 10, in_channels: int = 3, conv: str = "dgconv") -> GResNeXt:
    """The ResNeXt paper's CIFAR ResNeXt-29 (8×64d): 64-channel 3×3 stem, three stages of three
    bottlenecks, 3×3 widths 512/1024/2048, outputs 256/512/1024, strides 1, 2, 2."""
    return GResNeXt((3, 3, 3), 8, 64, "cifar", num_classes, in_channels, conv)


@register_model
def g_resnext29_2x64d(num_classes: int = 10, in_channels: int = 3, conv: str = "dgconv") -> GResNeXt:
    """A small CIFAR ResNeXt-29 (2×64d): 3×3 widths 128/256/512, outputs 256/512/1024."""
    return GResNeXt((3, 3, 3), 2, 64, "cifar", num_classes, in_channels, conv)
