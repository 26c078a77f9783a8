"""What every ACS model returns, and the shared forward/reference-cost plumbing."""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.cost import MacMeter
from acs.gates import GateOutput
from acs.gates.base import prepared_gates
from acs.ops import prepared_dgconvs


class Output(NamedTuple):
    """``logits`` (N × classes), ``macs`` (N, per-sample MACs, float64), ``masks`` (N × k per gated
    layer) and, parallel to them, ``probs``: the soft scores each mask was drawn from (see
    :class:`acs.gates.GateOutput`), for regularizers on probabilities. Producers that have none
    (deployment executors) leave ``probs`` empty."""

    logits: Tensor
    macs: Tensor
    masks: List[Tensor]
    probs: Sequence[Tensor] = ()


class AcsModel(nn.Module):
    """Base of the registry's models: subclasses implement :meth:`run`, which computes the logits
    and the gates' decisions in network order, and reports every Conv2d/Linear it executes (and
    every gate) to a :class:`MacMeter`."""

    def run(self, x: Tensor, meter: MacMeter) -> Tuple[Tensor, List[GateOutput]]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Output:
        meter = MacMeter(x.shape[0], device=x.device)
        # Every DGConv2d's mask computed once for the pass, batched by shape (see prepared_dgconvs),
        # and the gates' per-pass tensors (Gumbel noise, FBS's masks) made once for all (prepared_gates).
        with prepared_dgconvs(self), prepared_gates(self):
            logits, decisions = self.run(x, meter)
            macs = meter.total
        return Output(logits, macs, [d.mask for d in decisions], [d.probs for d in decisions])

    @torch.no_grad()
    def dense_macs(self, input_size: Sequence[int]) -> int:
        """MACs of one ``input_size`` (C, H, W) sample through the same backbone with no gate
        networks, every channel computed and every DGConv2d fully connected."""
        was_training = self.training
        self.eval()  # a probe must not update BatchNorm running statistics
        try:
            param = next(self.parameters())
            meter = MacMeter(1, device=param.device, dense=True)
            self.run(torch.zeros(1, *input_size, device=param.device, dtype=param.dtype), meter)
        finally:
            self.train(was_training)
        return int(round(meter.total.item()))
