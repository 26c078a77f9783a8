"""Set a model's learned decisions to a chosen operating point, for benchmarking without training."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from acs.gates import ACSGate
from acs.ops import DGConv2d


@torch.no_grad()
def calibrate_keep(
    model: nn.Module, input_size: Sequence[int], keep: float, batch: int = 16, seed: int = 0
) -> nn.Module:
    """Sets every ACS gate's output bias so that each channel is kept for about a fraction ``keep``
    of random inputs. Gates are calibrated in network order, because a gate's input depends on the
    masks of the layers before it. Returns ``model`` (changed in place, left in eval mode)."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=generator)
    for gate in [m for m in model.modules() if isinstance(m, ACSGate)]:
        seen = []
        hook = gate.register_forward_hook(lambda module, args, out: seen.append(module.probabilities(args[0])))
        try:
            model(x)
        finally:
            hook.remove()
        logits = torch.logit(seen[0].clamp(1e-6, 1 - 1e-6))
        if keep <= 0.0:
            shift = logits.max(0).values + 1.0
        elif keep >= 1.0:
            shift = logits.min(0).values - 1.0
        else:
            shift = torch.quantile(logits, 1.0 - keep, dim=0)
        gate.head.bias -= shift
    return model


@torch.no_grad()
def set_groups(model: nn.Module, groups: int) -> nn.Module:
    """Sets every DGConv2d to ``groups`` contiguous groups (where it has enough gates), keeping the
    gates' magnitudes: the first log2(groups) factors are identities, the rest all-ones."""
    bits = int(round(math.log2(groups)))
    if 2**bits != groups:
        raise ValueError(f"groups must be a power of two, got {groups}")
    for conv in model.modules():
        if isinstance(conv, DGConv2d) and conv.num_gates >= bits:
            conv.set_contiguous_groups(groups)
    return model
