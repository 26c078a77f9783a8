"""Index-level views of a dataset: quick-run subsets and the held-out validation split."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image.

    Train and validation parts share one raw dataset (loaded once) but need different transforms,
    so the transform lives here rather than on the torchvision dataset.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Optional[Callable] = None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, target = self.base[self.indices[i]]
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def first(n_total: int, subset: Optional[int]) -> range:
    """Indices of the first ``subset`` samples (all when None): a fixed, cheap slice for quick runs."""
    return range(n_total if subset is None else min(subset, n_total))


def train_val_split(indices: Sequence[int], val_split: float, seed: int) -> Tuple[list, list]:
    """Random, seed-determined partition of ``indices`` into (train, val), val ≈ val_split of them.

    Both parts keep ascending order, so only the seed (not the loader) decides who is held out.
    """
    indices = list(indices)
    if val_split <= 0:
        return indices, []
    n_val = max(1, int(round(val_split * len(indices))))
    if n_val >= len(indices):
        raise ValueError(f"val_split={val_split} leaves no training samples out of {len(indices)}")
    perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(perm[:n_val])
    train = [idx for k, idx in enumerate(indices) if k not in held]
    val = [idx for k, idx in enumerate(indices) if k in held]
    return train, val
