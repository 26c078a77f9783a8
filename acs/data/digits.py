"""scikit-learn's bundled handwritten digits: real data that ships with sklearn, so no download.

1797 grey 8x8 images of the digits 0-9 (UCI optical recognition set), split once into train and
test with a fixed seed, independent of any run seed, so every run sees the same test set.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

TOTAL = 1797
NATIVE_SIZE = 8
# Pixel statistics of all 1797 images scaled to [0, 1]. Upscaling replicates pixels (nearest), which
# leaves these statistics unchanged.
MEAN = (0.3053,)
STD = (0.3760,)
# Default 16x16: 8x8 would reach DenseNet's third block at 2x2, leaving the gate networks' strided
# convs almost nothing to read; 16x16 keeps 4x4 there while costing a quarter of 32x32 on a CPU.
DEFAULT_IMAGE_SIZE = 16
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _split_indices(n: int) -> Tuple[np.ndarray, np.ndarray]:
    # np.random.RandomState is frozen across numpy versions, so the split never changes under us.
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@lru_cache(maxsize=1)
def _load() -> Tuple[np.ndarray, np.ndarray]:
    # Parsing sklearn's CSV takes ~0.3 s; train, test and repeated builds share one read.
    from sklearn.datasets import load_digits  # optional dependency, only needed for this set

    bunch = load_digits()
    return bunch.images, bunch.target


class DigitsDataset(Dataset):
    """The train (80 %, 1438 images) or test (20 %, 359 images) part of ``load_digits``.

    Samples are float tensors (1, image_size, image_size) in [0, 1], enlarged from 8x8 by
    integer pixel replication; ``image_size`` must be a multiple of 8.
    """

    def __init__(self, train: bool = True, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        if image_size <= 0 or image_size % NATIVE_SIZE:
            raise ValueError(f"digits image_size must be a positive multiple of 8, got {image_size}")
        all_images, all_targets = _load()
        train_idx, test_idx = _split_indices(len(all_targets))
        idx = train_idx if train else test_idx
        # sklearn's pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap); scale to [0, 1].
        images = torch.as_tensor(all_images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
        if image_size != NATIVE_SIZE:
            images = F.interpolate(images, size=(image_size, image_size), mode="nearest")
        self.data: Tensor = images.contiguous()
        self.targets: Tensor = torch.as_tensor(all_targets[idx], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        return self.data[index], int(self.targets[index])
