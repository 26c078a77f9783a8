"""Per-split metrics of one pass over a loader: loss, top-1/top-5, compute and keep rates."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from acs.models import Output
from acs.training import distributed
from acs.training.objective import accuracy_counts


class SplitMetrics:
    """Running sums over one split; :meth:`compute` gives the ``split/name`` metrics.

    ``compute_ratio`` is mean MACs over the dense model's MACs (the gates' own cost included);
    ``flops`` is 2·MACs; ``keep/LNN`` is the fraction of channels layer NN kept.
    """

    def __init__(self, split: str, dense_macs: int):
        self.split, self.dense_macs = split, dense_macs
        self.samples = 0
        self.sums = {"loss": 0.0, "xent": 0.0, "reg": 0.0, "macs": 0.0, "acc1": 0, "acc5": 0}
        self.kept: Optional[List[Tensor]] = None

    def update(self, out: Output, target: Tensor, loss: Tensor, xent: Tensor, reg: Optional[Tensor]) -> None:
        n = target.shape[0]
        self.samples += n
        top1, top5 = accuracy_counts(out.logits.detach(), target)
        self.sums["acc1"] += top1
        self.sums["acc5"] += top5
        self.sums["loss"] += float(loss) * n
        self.sums["xent"] += float(xent) * n
        self.sums["reg"] += float(reg) * n if reg is not None else 0.0
        self.sums["macs"] += float(out.macs.detach().sum())
        kept = [m.detach().sum(0) for m in out.masks]
        self.kept = kept if self.kept is None else [a + b for a, b in zip(self.kept, kept)]

    def all_reduce(self) -> "SplitMetrics":
        """Adds up the sums of all ranks' shares (nothing to do in one process). Exact: the counts are
        integers, which float64 carries without rounding."""
        if distributed.world_size() == 1:
            return self
        kept = self.kept or []
        head = torch.tensor([self.samples, *self.sums.values()], dtype=torch.float64)
        total = distributed.all_reduce_sum(torch.cat([head, *(k.double().cpu() for k in kept)]))
        self.samples = int(total[0])
        for key, value in zip(self.sums, total[1 : len(head)].tolist()):
            self.sums[key] = int(value) if key.startswith("acc") else value
        if kept:
            parts = total[len(head) :].split([k.numel() for k in kept])
            self.kept = [p.to(k.device, k.dtype).view_as(k) for p, k in zip(parts, kept)]
        return self

    @property
    def running(self) -> Dict[str, float]:
        """Short figures for a progress bar."""
        n = max(self.samples, 1)
        return {
            "loss": round(self.sums["loss"] / n, 4),
            "acc": round(100.0 * self.sums["acc1"] / n, 2),
            "compute%": round(100.0 * self.sums["macs"] / n / self.dense_macs, 1),
        }

    def compute(self) -> Dict[str, float]:
        n = max(self.samples, 1)
        macs = self.sums["macs"] / n
        s = self.split
        metrics = {
            f"{s}/loss": self.sums["loss"] / n,
            f"{s}/xent": self.sums["xent"] / n,
            f"{s}/reg": self.sums["reg"] / n,
            f"{s}/acc1": 100.0 * self.sums["acc1"] / n,
            f"{s}/acc5": 100.0 * self.sums["acc5"] / n,
            f"{s}/macs": macs,
            f"{s}/flops": 2 * macs,
            f"{s}/compute_ratio": macs / self.dense_macs,
        }
        if self.kept:
            rates = [(k.sum() / (k.numel() * n)).item() for k in self.kept]
            metrics[f"{s}/keep_rate"] = sum(r * k.numel() for r, k in zip(rates, self.kept)) / sum(
                k.numel() for k in self.kept
            )
            metrics.update({f"{s}/keep/L{i:02d}": r for i, r in enumerate(rates)})
        return metrics
