"""Wall-clock timing of repeated calls, shared by the training and the deployment benchmarks."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence

import torch


def time_interleaved(
    fns: Sequence[Callable[[], object]], warmup: int, runs: int, device: Optional[torch.device] = None
) -> List[List[float]]:
    """Seconds per call of each of ``fns``, after ``warmup`` untimed calls of each, timed in rounds
    (one call of each per round) rather than one function after the other: on a shared or
    throttling machine speed drifts during a benchmark, and interleaving lets every variant see the
    same drift, which keeps their ratios honest. On CUDA the device is synchronised around each
    call, so that the time covers the kernels and not just their launch."""
    cuda = device is not None and device.type == "cuda"
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, seconds in zip(fns, times):
            if cuda:
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - tic)
    return times
