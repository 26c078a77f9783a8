"""Shared test utilities: an independent MAC counter and DGConv materialisation."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from acs.models import AcsModel
from acs.ops import DGConv2d


class NullMeter:
    """Swallows a model's own cost bookkeeping, so that the flop counter sees only the network."""

    dense = False

    def layer(self, *args, **kwargs):
        pass

    def add(self, *args, **kwargs):
        pass


def counted_macs(module: nn.Module, x: torch.Tensor) -> float:
    """MACs per sample that torch.utils.flop_counter sees (FLOPs ÷ 2 ÷ batch)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.run(x, NullMeter()) if isinstance(module, AcsModel) else module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def materialize_dgconvs(module: nn.Module) -> nn.Module:
    """Replaces every DGConv2d below ``module`` by its grouped equivalent, in place."""
    for name, child in module.named_children():
        if isinstance(child, DGConv2d):
            setattr(module, name, child.materialize())
        else:
            materialize_dgconvs(child)
    return module
