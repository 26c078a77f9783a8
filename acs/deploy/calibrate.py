"""Set a model's learned decisions to a chosen operating point, for benchmarking without training."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from acs.gates import AIGGate, LogitGate
from acs.ops import DGConv2d


def keep_bias(gate: LogitGate) -> Tensor:
    """The parameter (a view of it) that shifts each keep logit of ``gate`` one for one: the gate's
    own :attr:`~acs.gates.Gate.keep_bias`, of which ``aig``'s is the ``on`` half of its (off, on) pairs."""
    if not gate.keep_bias:
        raise TypeError(f"no keep bias known for gate {type(gate).__name__}")
    bias = gate.get_parameter(gate.keep_bias)
    return bias.view(-1, 2)[:, 1] if isinstance(gate, AIGGate) else bias


@torch.no_grad()
def calibrate_keep(
    model: nn.Module, input_size: Sequence[int], keep: float, batch: int = 16, seed: int = 0
) -> nn.Module:
    """Sets every threshold gate's keep bias (:func:`keep_bias`) so that each channel is kept for
    about a fraction ``keep`` of random inputs. Gates are calibrated in network order, because a
    gate's input depends on the masks of the layers before it. FBS gates are left alone: their
    ``density`` fixes what they keep. Returns ``model`` (changed in place, left in eval mode)."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=generator)
    for gate in [m for m in model.modules() if isinstance(m, LogitGate)]:
        seen = []
        hook = gate.register_forward_hook(lambda module, args, out: seen.append(module.logits(args[0])))
        try:
            model(x)
        finally:
            hook.remove()
        logits = seen[0]
        if keep <= 0.0:
            shift = logits.max(0).values + 1.0
        elif keep >= 1.0:
            shift = logits.min(0).values - 1.0
        else:
            shift = torch.quantile(logits, 1.0 - keep, dim=0)
        keep_bias(gate).sub_(shift)
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
