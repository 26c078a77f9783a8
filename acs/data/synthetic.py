"""A small random-but-learnable image set for tests and smoke runs (no files, fully deterministic)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


class SyntheticDataset(Dataset):
    """Each class has a fixed smooth template image; a sample is its class template plus Gaussian noise.

    Templates are drawn at 4x4 and upsampled, so they are low-frequency: they survive the pooling of
    a CNN and a small model learns them in a few steps, and a nearest-class-mean classifier already
    scores far above chance. ``seed`` fixes the templates; the train and test splits share templates
    but draw independent noise and labels, so test accuracy measures generalisation.
    Samples are float tensors of shape (channels, image_size, image_size), roughly zero mean and
    unit variance, so they need no normalisation.
    """

    def __init__(
        self,
        size: int = 512,
        num_classes: int = 10,
        channels: int = 3,
        image_size: int = 32,
        noise: float = 1.0,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        if min(size, num_classes, channels, image_size) <= 0 or noise < 0:
            raise ValueError(
                f"synthetic dataset needs positive size/num_classes/channels/image_size and noise >= 0, got "
                f"size={size}, num_classes={num_classes}, channels={channels}, image_size={image_size}, noise={noise}"
            )
        self.num_classes = num_classes
        templates = self.templates(num_classes, channels, image_size, seed)
        # Distinct streams for the two splits, both derived from the same seed.
        gen = torch.Generator().manual_seed(seed * 2 + (0 if train else 1) + 1)
        self.targets: Tensor = torch.randint(num_classes, (size,), generator=gen)
        noise_t = torch.randn(size, channels, image_size, image_size, generator=gen)
        self.data: Tensor = templates[self.targets] + noise * noise_t

    @staticmethod
    def templates(num_classes: int, channels: int, image_size: int, seed: int) -> Tensor:
        """The class templates, (num_classes, channels, image_size, image_size), unit scale."""
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randn(num_classes, channels, 4, 4, generator=gen)
        return F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        return self.data[index], int(self.targets[index])
