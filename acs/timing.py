"""Wall-clock timing of repeated calls, shared by the training and the deployment benchmarks."""

from __future__ import annotations

import time
from typing import Callable, List, Optional

import torch


def time_calls(fn: Callable[[], object], warmup: int, runs: int, device: Optional[torch.device] = None) -> List[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls. On CUDA the device is synchronised
    around each call, so that the time covers the kernels and not just their launch."""
    cuda = device is not None and device.type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return times
