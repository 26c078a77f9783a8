"""Data-parallel training under torchrun: process group, rank 0's privileges, exact reductions.

``torchrun --nproc_per_node=N run.py ...`` starts N copies of run.py with RANK, WORLD_SIZE and
LOCAL_RANK set; that environment is the whole switch. Each process trains on its share of every
global batch through DistributedDataParallel: gloo on CPU, NCCL on CUDA (``cuda:LOCAL_RANK``).
In a plain process every function here is a no-op, so the training code has a single path.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the only process that writes the run folder, logs and talks to W&B."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Joins torchrun's process group (once) and returns this process's device."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: Tensor) -> Tensor:
    """Element-wise sum over ranks; NCCL needs the tensor on this process's GPU."""
    if not active():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
    total = values.to(device)
    dist.all_reduce(total)
    return total.to(values.device)


def seed_rank(seed: int, epoch: int) -> None:
    """Ranks > 0 reseed Python, NumPy and torch after the shared start (same initial weights), so that
    random augmentations and stochastic gates differ between processes; rank 0 keeps the stream a
    single process would draw from."""
    if rank() > 0:
        mixed = (seed * 100_003 + epoch) * world_size() + rank()
        random.seed(mixed)
        np.random.seed(mixed % 2**32)
        torch.manual_seed(mixed)


def broadcast_buffers(model: nn.Module) -> None:
    """Every rank takes rank 0's buffers. Plain BatchNorm updates running statistics from each rank's
    own batches; rank 0's are the ones the checkpoint keeps, so every rank evaluates with those."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (itself in one process). No ``find_unused_parameters``:
    every parameter takes part in every forward, a skipped channel is multiplied by a zero mask and
    so gets a zero gradient, not none."""
    if not active():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm statistics over the global batch rather than each rank's share: torch's SyncBatchNorm
    on CUDA, :class:`GlobalBatchNorm` on CPU (torch's runs on GPUs only)."""
    if not active():
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_batchnorm(model)


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        synced = GlobalBatchNorm(module.num_features, module.eps, module.momentum)
        synced.load_state_dict(module.state_dict())
        return synced.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, _to_global_batchnorm(child))
    return module


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Training-mode BatchNorm whose statistics cover all ranks' samples: per-channel sums, sums of
    squares and counts are added up with a differentiable all-reduce (float64, so the one-pass
    variance loses nothing). The result equals plain BatchNorm on the whole global batch."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        x64 = x.double()
        count = x64.new_tensor([x.numel() // x.shape[1]])
        total = dist_fn.all_reduce(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]))
        c, n = x.shape[1], total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x64 - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)
