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

    The logits are the gate's keep bias (``keep_bias``): ``optimizer.keep_bias_lr_scale`` sets
    their learning rate, as it does for the gate networks' output biases.
    """

    # The input itself needs no copy; the gate never reads it beyond its batch size.
    reads = SUMMARY_INPUT
    keep_bias = "logit"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        init_keep: float = 0.9,
        estimator: str = "ste",
        temperature: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, estimator, temperature)
        self.logit = nn.Parameter(torch.full((out_channels,), keep_logit(init_keep)))

    def score(self, summary: Tensor) -> Tensor:
        return self.logit.expand(summary.shape[0], -1)

    def kept(self) -> Tensor:
        """Indices of the channels that evaluation keeps, by the very threshold it applies."""
        mask, _ = binary_keep(self.logit.detach()[None], self.estimator, self.temperature, training=False)
        return mask[0].nonzero().flatten()

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        return []  # no network: the decisions cost nothing
