"""Per-split metrics of one pass over a loader: loss, top-1/top-5, compute and keep rates."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from acs.models import Output
from acs.training import distributed

KEYS = ("loss", "xent", "reg", "macs", "acc1", "acc5")


class SplitMetrics:
    """Running sums over one split; :meth:`compute` gives the ``split/name`` metrics.

    ``compute_ratio`` is mean MACs over the dense model's MACs (the gates' own cost included);
    ``flops`` is 2·MACs; ``keep/LNN`` is the fraction of channels layer NN kept.

    The sums stay on the device where the batches are (float64, float32 where the device has no
    float64): :meth:`update` never waits for it; :meth:`compute` reads everything to the host at once.
    """

    def __init__(self, split: str, dense_macs: int):
        self.split, self.dense_macs = split, dense_macs
        self.samples = 0
        self.sums: Optional[Tensor] = None  # KEYS, in that order
        self.kept: Optional[List[Tensor]] = None
        self._host: Optional[List[float]] = None  # what read() took to the host: the sums, then the layers'

    def update(self, out: Output, target: Tensor, loss: Tensor, xent: Tensor, reg: Optional[Tensor]) -> None:
        n = target.shape[0]
        self.samples += n
        dtype = sum_dtype(target.device)
        hits = accuracy_hits(out.logits.detach(), target)
        reg = reg.detach() if reg is not None else loss.new_zeros(())
        means = torch.stack([loss.detach().to(dtype), xent.detach().to(dtype), reg.to(dtype)]) * n
        step = torch.cat([means, out.macs.detach().sum().to(dtype)[None], hits.to(dtype)])
        self.sums = step if self.sums is None else self.sums + step
        kept = [m.detach().sum(0) for m in out.masks]
        self.kept = kept if self.kept is None else [a + b for a, b in zip(self.kept, kept)]
        self._host = None

    def read(self, *extra: Tensor) -> List[float]:
        """Takes the sums to the host in one transfer, together with ``extra`` (flattened), whose
        values it returns; :meth:`compute` then needs no other."""
        parts: List[Tensor] = []
        if self.sums is not None:
            parts = [self.sums, *(k.sum().to(self.sums.dtype)[None] for k in self.kept or [])]
        dtype = parts[0].dtype if parts else (extra[0].dtype if extra else torch.float64)
        parts += [e.detach().reshape(-1).to(dtype) for e in extra]
        values = torch.cat(parts).tolist() if parts else []
        head = len(KEYS) + len(self.kept or []) if self.sums is not None else 0
        self._host = values[:head] if self.sums is not None else None
        return values[head:]

    def figures(self, sums: List[float]) -> Dict[str, float]:
        """Short figures for a progress bar, from sums already on the host (in KEYS' order)."""
        n = max(self.samples, 1)
        named = dict(zip(KEYS, sums))
        return {
            "loss": round(named["loss"] / n, 4),
            "acc": round(100.0 * named["acc1"] / n, 2),
            "compute%": round(100.0 * named["macs"] / n / self.dense_macs, 1),
        }

    def all_reduce(self) -> "SplitMetrics":
        """Adds up the sums of all ranks' shares (nothing to do in one process). Exact: the counts are
        integers, which float64 carries without rounding."""
        if distributed.world_size() == 1:
            return self
        kept = self.kept or []
        sums = self.sums.double().cpu() if self.sums is not None else torch.zeros(len(KEYS), dtype=torch.float64)
        head = torch.cat([torch.tensor([float(self.samples)], dtype=torch.float64), sums])
        total = distributed.all_reduce_sum(torch.cat([head, *(k.double().cpu() for k in kept)]))
        self.samples = int(total[0])
        device = self.sums.device if self.sums is not None else total.device
        dtype = self.sums.dtype if self.sums is not None else torch.float64
        self.sums = total[1 : len(head)].to(device, dtype)
        if kept:
            parts = total[len(head) :].split([k.numel() for k in kept])
            self.kept = [p.to(k.device, k.dtype).view_as(k) for p, k in zip(parts, kept)]
        self._host = None
        return self

    def compute(self) -> Dict[str, float]:
        n = max(self.samples, 1)
        kept = self.kept or []
        if self._host is None and self.sums is not None:
            self.read()
        if self.sums is None:
            values, layer_sums = [0.0] * len(KEYS), []
        else:
            values, layer_sums = self._host[: len(KEYS)], self._host[len(KEYS) :]
        sums = dict(zip(KEYS, values))
        macs = sums["macs"] / n
        s = self.split
        metrics = {
            f"{s}/loss": sums["loss"] / n,
            f"{s}/xent": sums["xent"] / n,
            f"{s}/reg": sums["reg"] / n,
            f"{s}/acc1": 100.0 * sums["acc1"] / n,
            f"{s}/acc5": 100.0 * sums["acc5"] / n,
            f"{s}/macs": macs,
            f"{s}/flops": 2 * macs,
            f"{s}/compute_ratio": macs / self.dense_macs,
        }
        if kept:
            rates = [total / (k.numel() * n) for total, k in zip(layer_sums, kept)]
            metrics[f"{s}/keep_rate"] = sum(r * k.numel() for r, k in zip(rates, kept)) / sum(k.numel() for k in kept)
            metrics.update({f"{s}/keep/L{i:02d}": r for i, r in enumerate(rates)})
        return metrics


def sum_dtype(device: torch.device) -> torch.dtype:
    """What the device sums are kept in: float64, float32 where the device has no float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def accuracy_hits(logits: Tensor, target: Tensor, topk=(1, 5)) -> Tensor:
    """The number of samples whose target is among the top-k logits, for each k (k capped at the
    classes), as one tensor left on the device: read with the epoch's other sums, not per step."""
    maxk = min(max(topk), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(target[:, None])
    return torch.stack([hits[:, : min(k, maxk)].any(1).sum() for k in topk])
