"""Learned static channel pruning: the one gate whose decision does not depend on the input.

It is the ablation that isolates what input dependence buys: the same estimators, regularizers and
cost model as the gate networks, but one learned keep logit per output channel and no network, so
no gate cost. At deployment (:func:`acs.deploy.to_thin`) the layers lose their dropped channels for
good and become a physically thinner ungated model.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor, nn

from acs.gates.base import SUMMARY_INPUT, CostLayer, LogitGate, keep_logit, register_gate
from acs.ops import binary_keep


@register_gate("static")
class StaticGate(LogitGate):
    """One keep logit per output channel, shared by every sample: ``sigmoid(logit) > 0.5`` keeps the
    channel (straight-through in training, or a Gumbel-sigmoid draw per sample with
    ``estimator="gumbel"``). ``init_keep`` sets every logit's starting keep probability.

    The logit is ``gain · θ`` with ``θ`` the parameter. A gate network's keep logit moves through
    its whole head (some dozen weights per logit) at every step; a lone parameter would move that
    much slower, since a channel's share of the compute term's gradient is about 1/400 of the
    model here. ``gain`` multiplies the logit's step by ``gain²`` under SGD (the effective learning
    rate of the static decisions), so the baseline gets a learning rate of its own to tune.
    """

    # The input itself needs no copy; the gate never reads it beyond its batch size.
    reads = SUMMARY_INPUT

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        init_keep: float = 0.9,
        gain: float = 16.0,
        estimator: str = "ste",
        temperature: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature)
        if not gain > 0:
            raise ValueError(f"gate.gain must be > 0, got {gain}")
        self.gain = gain
        self.theta = nn.Parameter(torch.full((out_channels,), keep_logit(init_keep) / gain))

    @property
    def logit(self) -> Tensor:
        return self.gain * self.theta

    def score(self, summary: Tensor) -> Tensor:
        return self.logit.expand(summary.shape[0], -1)

    def kept(self) -> Tensor:
        """Indices of the channels that evaluation keeps, by the very threshold it applies."""
        mask, _ = binary_keep(self.logit.detach()[None], self.estimator, self.temperature, training=False)
        return mask[0].nonzero().flatten()

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        return []  # no network: the decisions cost nothing
