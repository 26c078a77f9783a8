"""The pipeline on the device: a split held as one tensor on the training device, batches made there.

For the data sets that fit in memory. A batch is a few batched tensor operations on the device: no
worker processes, no Python per sample, no copy from the host per batch. It draws the augmentation
of the per-sample pipeline (``transforms.CROP_FLIP``), normalises as it does, and visits the samples
in the order of the same samplers. The crops and flips of epoch ``e`` are drawn from (seed, e) alone,
one per sample of the split: a resumed run, or one with another number of processes, draws the same.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler

from acs.data.info import DatasetInfo
from acs.data.splits import TransformedSubset
from acs.data.transforms import CropFlip

Batch = Tuple[Tensor, Tensor]


class HeldSplit:
    """The images of a raw split (uint8, or float for the generated sets), zero-padded by ``padding``
    pixels on each side for random crops, and their labels, held on ``device``."""

    def __init__(self, images: Tensor, targets: Tensor, info: DatasetInfo, padding: int, device: torch.device) -> None:
        h, w = images.shape[-2:]
        # Padded once here rather than per batch: a crop is then one gather from a strided view.
        pixels = F.pad(images.to(device).contiguous(), [padding] * 4).contiguous()
        self.targets = targets.to(device=device, dtype=torch.long)
        # (N, C, 2p+1, 2p+1, H, W): every window of the image's size, a view of the same memory.
        self.windows = pixels.unfold(2, h, 1).unfold(3, w, 1)
        self.centre = pixels[:, :, padding : padding + h, padding : padding + w]
        self.channels = torch.arange(pixels.shape[1], device=device)
        self.columns = torch.arange(w, device=device)
        self.mean = self.std = None
        if info.mean is not None and info.std is not None:
            self.mean, self.std = (torch.tensor(s, device=device).view(-1, 1, 1) for s in (info.mean, info.std))

    @property
    def device(self) -> torch.device:
        return self.targets.device

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, rows: Tensor, crop_flip: Optional[Tensor] = None) -> Batch:
        """Images ``rows`` as the model reads them, and their labels; ``crop_flip``: one (top, left,
        flip) per row, the window of the padded image to crop and whether to mirror it, else the
        centre (the image itself)."""
        if crop_flip is None:
            images = self.centre[rows]
        else:
            top, left, flip = crop_flip.unbind(1)
            images = self.windows[rows[:, None], self.channels, top[:, None], left[:, None]]
            # Each image's order of columns, mirrored where it flips: one gather (cheaper than flip and where).
            columns = torch.where(flip[:, None].bool(), self.columns.flip(0), self.columns)
            images = images.gather(3, columns[:, None, None, :].expand_as(images))
        return self.normalise(images), self.targets[rows]

    def normalise(self, images: Tensor) -> Tensor:
        """The operations of ``ToDtype(float32, scale=True)`` and ``Normalize``, in their order, in place
        (``images`` is a batch's own copy)."""
        if images.dtype == torch.uint8:
            images = images.to(torch.float32).mul_(1.0 / 255)
        if self.mean is not None:
            images = images.sub_(self.mean).div_(self.std)
        return images


def draw_crop_flip(size: int, policy: CropFlip, seed: int, epoch: int) -> Tensor:
    """(size, 3) int64: the (top, left, flip) of each sample of a split in ``epoch``, from (seed, epoch)
    alone. Tops and lefts are uniform in [0, 2·padding], as RandomCrop draws them; flips are 0 or 1
    with probability 1/2 each where the policy flips."""
    state = np.random.SeedSequence([seed & (2**64 - 1), epoch]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(state))
    offsets = torch.randint(2 * policy.padding + 1, (size, 2), generator=gen)
    flips = torch.randint(2, (size, 1), generator=gen) if policy.flip else torch.zeros(size, 1, dtype=torch.long)
    return torch.cat([offsets, flips], dim=1)


class DeviceBatches:
    """The samples of ``dataset``, a subset of the raw split ``held`` holds, in batches made from
    ``held``: in the order of ``sampler`` (this process's share), ``batch_size`` at a time, the last
    one smaller; cropped and flipped by ``policy`` (None: as they are). Used like a DataLoader (same
    ``dataset``, ``sampler``, ``batch_size``); call :meth:`set_epoch` before each training epoch."""

    def __init__(
        self,
        held: HeldSplit,
        dataset: TransformedSubset,
        sampler: Sampler[int],
        batch_size: int,
        policy: Optional[CropFlip] = None,
        seed: int = 0,
    ) -> None:
        self.held, self.dataset, self.sampler, self.batch_size, self.seed = held, dataset, sampler, batch_size, seed
        self.rows = torch.as_tensor(dataset.indices, dtype=torch.long, device=held.device)
        self.policy = policy if policy is not None and (policy.padding or policy.flip) else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        # Positions in the split, this epoch's order: one copy to the device per epoch.
        positions = torch.as_tensor(list(self.sampler), dtype=torch.long)
        rows = self.rows[positions.to(self.held.device)]
        crop_flip = None
        if self.policy is not None:
            drawn = draw_crop_flip(len(self.rows), self.policy, self.seed, self.epoch)
            crop_flip = drawn[positions].to(self.held.device)
        for start in range(0, len(rows), self.batch_size):
            part = slice(start, start + self.batch_size)
            yield self.held.batch(rows[part], None if crop_flip is None else crop_flip[part])
