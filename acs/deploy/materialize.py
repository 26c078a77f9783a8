"""Fixed grouping: every DGConv2d becomes the standard grouped convolution its gates select."""
from __future__ import annotations

from typing import Dict

from torch import nn

from acs.ops import DGConv2d


def _grouped(conv: DGConv2d) -> nn.Module:
    """``conv.materialize()`` with the DGConv's training mode and weight trainability kept."""
    grouped = conv.materialize().train(conv.training)
    grouped.requires_grad_(conv.weight.requires_grad)
    return grouped


def materialize(model: nn.Module) -> nn.Module:
    """Replaces every DGConv2d in ``model``, in place, by its fixed grouped equivalent and returns
    ``model``.

    Each DGConv2d becomes a grouped ``nn.Conv2d`` (contiguous groups) or a
    :class:`~acs.ops.PermutedGroupConv2d` (interleaved groups): backbone convs, the convs inside
    gate networks (``ACSGate.conv_a``/``conv_b``) and G-ResNeXt's 3×3 convs alike. The function is
    unchanged (same logits up to float rounding, same ``Output.macs``: the cost model counts a
    grouped conv's connectivity), but the work really shrinks, so ``FlopCounterMode`` on an ungated
    model counts exactly ``Output.macs`` (FLOPs = 2·MACs).

    The grouping is frozen: the DGConv gates are gone from ``model.parameters()`` and
    ``state_dict()``, so the result is for training-free export and inference (its weights stay
    trainable, but its grouping can no longer be learned). Take ``model.dense_macs(...)`` before
    materializing: the reference cost treats a DGConv2d as fully connected, a grouped conv not.
    """
    if isinstance(model, DGConv2d):  # nothing to replace it in: hand back the grouped module
        return _grouped(model)
    # Collect first, so the module tree is not modified while it is being walked.
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, DGConv2d)
    ]
    replaced: Dict[int, nn.Module] = {}  # a DGConv2d shared by two parents stays shared
    for parent, name, child in targets:
        if id(child) not in replaced:
            replaced[id(child)] = _grouped(child)
        setattr(parent, name, replaced[id(child)])
    return model
