"""Training images/s delivered by the per-sample pipeline (DataLoader) and by the pipeline on the device.

    python benchmarks/data_pipeline.py                         # CPU: 2 threads, per-sample with 0 and 2 workers
    python benchmarks/data_pipeline.py --device cuda

Both pipelines come from ``build_loaders`` (``on_device=False`` and ``True``) for the same CIFAR-shaped
training split: random uint8 images in torchvision's CIFAR10 class, set in memory (no files, no
download), registered as a data set with CIFAR-10's facts and policy (random crop with 4 px padding,
flip, normalisation). A batch counts once it is on the device. Rounds of the pipelines alternate and
each figure is the median over the rounds (a loaded machine slows one round, not one pipeline); the
last line is the ratio of the device pipeline to the faster per-sample configuration. Beside the
images/s of the wall clock, the images per CPU-second of this process (for the pipelines that run in
it: without workers) say what a batch costs whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import statistics
import sys
import time
from typing import Tuple

import numpy as np
import torch
from torchvision import datasets as tvd

from acs.data import DeviceBatches, build_loaders
from acs.data.registry import DATASETS, get_spec
from acs.files import write_json

NAME = "cifar_shaped"


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="per-sample: DataLoader workers")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def register_cifar_shaped(size: int) -> None:
    """Data set ``cifar_shaped``: CIFAR-10's facts and policy, ``size`` random training images."""
    rng = np.random.default_rng(0)

    def read(root, train, download, options):
        raw = tvd.CIFAR10.__new__(tvd.CIFAR10)  # the arrays CIFAR10 reads from its pickles, set directly
        raw.transform = raw.target_transform = None
        n = size if train else 100
        raw.data, raw.targets = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        return raw

    DATASETS.add(NAME, dataclasses.replace(get_spec("cifar10"), name=NAME, read=read, check=None))


def images_per_s(loader, batches: int, device: torch.device, epoch: int) -> Tuple[float, float]:
    """Images per second of the wall clock and per CPU-second of this process, over ``batches``
    training batches (after one, which starts workers), each moved to ``device``."""
    loader.set_epoch(epoch)
    stream = iter(loader.train)
    next(stream)
    tic, cpu, count = time.perf_counter(), time.process_time(), 0
    for images, target in itertools.islice(stream, batches):
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        count += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - tic), count / (time.process_time() - cpu)


def main(argv=None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    register_cifar_shaped(args.train_size)
    common = dict(batch_size=args.batch, seed=0)
    pipelines = {f"per-sample, {w} workers": build_loaders(NAME, on_device=False, num_workers=w, **common)
                 for w in args.workers}  # fmt: skip
    on_device = f"on the device ({device.type})"
    pipelines[on_device] = build_loaders(NAME, on_device=True, device=device, **common)
    rates = {name: [] for name in pipelines}
    for round_ in range(args.rounds):
        for name, loader in pipelines.items():
            rates[name].append(images_per_s(loader, args.batches, device, round_))
    wall = {name: statistics.median(r[0] for r in values) for name, values in rates.items()}
    cpu = {name: statistics.median(r[1] for r in values) for name, values in rates.items()
           if isinstance(pipelines[name].train, DeviceBatches) or pipelines[name].train.num_workers == 0}  # fmt: skip
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} threads, batch {args.batch}, "
          f"{args.rounds} rounds of {args.batches} batches, CIFAR-shaped 3x32x32, crop + flip")  # fmt: skip
    print(f"{'pipeline':28s} {'images/s':>10s} {'images/CPU-s':>13s}")
    for name, value in wall.items():
        print(f"{name:28s} {value:10,.0f} {f'{cpu[name]:,.0f}' if name in cpu else '-':>13s}")
    ratio = wall[on_device] / max(value for name, value in wall.items() if name != on_device)
    print(f"device / best per-sample: {ratio:.1f}x")
    if args.out:
        write_json(args.out, {"images_per_s": wall, "images_per_cpu_s": cpu, "ratio": ratio, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
