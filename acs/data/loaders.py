"""The public entry point: dataset name in, ready DataLoaders plus the facts a model factory needs out."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from acs.data.info import DatasetInfo
from acs.data.paths import resolve_root
from acs.data.registry import get_spec
from acs.data.splits import TransformedSubset, first, train_val_split
from acs.data.transforms import eval_transform, train_transform


@dataclass
class Datasets:
    """Transformed train / val (None without val_split) / test datasets and their facts."""

    train: TransformedSubset
    val: Optional[TransformedSubset]
    test: TransformedSubset
    info: DatasetInfo


@dataclass
class Loaders:
    """DataLoaders of one dataset; ``val`` is None unless ``val_split`` > 0."""

    train: DataLoader
    val: Optional[DataLoader]
    test: DataLoader
    info: DatasetInfo

    def set_epoch(self, epoch: int) -> None:
        """Call before each training epoch: its shuffle order then depends on (seed, epoch) only, so a
        resumed run, with any number of processes, sees the batches an uninterrupted one would."""
        sampler = self.train.sampler
        sampler.set_epoch(epoch)
        # Workers' base seeds (random augmentations) follow (seed, epoch) too, distinct on every rank.
        self.train.generator.manual_seed((sampler.seed + epoch) * sampler.num_replicas + sampler.rank)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return self.info.input_size


def _check_args(subset: Optional[int], val_split: float, batch_size: Optional[int] = None,
                num_workers: Optional[int] = None, eval_batch_size: Optional[int] = None) -> None:
    # One clear line each: these usually come from a command-line override with a typo.
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset <= 0):
        raise ValueError(f"dataset subset must be a positive integer or None, got {subset!r}")
    if not isinstance(val_split, (int, float)) or not 0.0 <= val_split < 1.0:
        raise ValueError(f"dataset val_split must be in [0, 1), got {val_split!r}")
    for key, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"{key} must be a positive integer, got {size!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")


def build_datasets(
    name: str,
    root: Optional[Union[str, os.PathLike]] = None,
    download: bool = False,
    subset: Optional[int] = None,
    val_split: float = 0.0,
    seed: int = 0,
    augment: bool = True,
    **dataset_options: Any,
) -> Datasets:
    """Reads ``name``'s train and test splits and wraps them with their transforms.

    ``root`` None means ``$ACS_DATA`` or ``./data``. ``subset=N`` keeps the first N samples of train
    and of test; ``val_split`` then holds out that fraction of the (subset) train samples, chosen by
    ``seed``, with eval transforms. Raises DatasetNotFoundError when files are missing.
    """
    _check_args(subset, val_split)
    spec = get_spec(name)
    info = spec.info(dataset_options)
    options = spec.resolve_options(dataset_options)
    folder = resolve_root(root)

    raw_train = spec.read(folder, True, download, options)
    raw_test = spec.read(folder, False, download, options)

    tf_train = train_transform(info, spec.augmentation, augment, spec.from_pil)
    tf_eval = eval_transform(info, spec.augmentation, spec.from_pil)

    train_idx, val_idx = train_val_split(first(len(raw_train), subset), val_split, seed)
    return Datasets(
        train=TransformedSubset(raw_train, train_idx, tf_train),
        val=TransformedSubset(raw_train, val_idx, tf_eval) if val_idx else None,
        test=TransformedSubset(raw_test, first(len(raw_test), subset), tf_eval),
        info=info,
    )


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + num_replicas, …`` in order: every sample goes to exactly one process.
    For evaluation, where DistributedSampler's padding would count some samples twice."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = range(rank, size, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A DataLoader of process ``rank``'s share of ``dataset``, ``batch_size`` samples a batch, with the
    platform's fixed choices (listed in :func:`build_loaders`)."""
    if shuffle:
        # Epoch e's order is one permutation drawn from (seed, e), whatever the number of processes;
        # rank r takes its positions r, r + N, …, so the k-th batches of all ranks together are
        # exactly the k-th batch of one process with N times the batch size. The factor keeps the
        # orders of (seed, e) and (seed + 1, e - 1) apart.
        sampler = DistributedSampler(dataset, num_replicas, rank, shuffle=True, seed=seed * 100_003)
    else:
        sampler = ShardSampler(len(dataset), num_replicas, rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        # Own generator: workers' base seeds depend on ``seed`` only, not on how much global RNG
        # the model's initialisation happened to consume.
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
        # Keeping workers alive avoids re-forking (and re-reading) every epoch.
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


def build_loaders(
    name: str,
    root: Optional[Union[str, os.PathLike]] = None,
    batch_size: int = 128,
    num_workers: int = 0,
    download: bool = False,
    subset: Optional[int] = None,
    val_split: float = 0.0,
    seed: int = 0,
    augment: bool = True,
    eval_batch_size: Optional[int] = None,
    num_replicas: int = 1,
    rank: int = 0,
    **dataset_options: Any,
) -> Loaders:
    """Train (shuffled), optional val, and test DataLoaders for dataset ``name``.

    Arguments as in :func:`build_datasets`; ``eval_batch_size`` (default ``batch_size``) is used for
    val and test. Train shuffles in an order drawn from ``seed`` and the epoch (call
    :meth:`Loaders.set_epoch` before each epoch); random augmentations draw from torch's global RNG
    (in workers: per-worker seeds derived from the loader's generator), so seed it too for
    bit-identical runs. Nothing is dropped (drop_last=False); memory is pinned when CUDA is available.
    With ``num_replicas`` processes (torchrun), the loaders hold process ``rank``'s share: batch sizes
    are global and each process gets 1/num_replicas of every batch (``batch_size`` must divide);
    the training order is the same as in one process, and val/test are split without repeats.
    ``dataset_options``: svhn ``extra``; digits ``image_size``; synthetic ``train_size``, ``test_size``,
    ``num_classes``, ``channels``, ``image_size``, ``noise``, ``data_seed``.
    """
    _check_args(subset, val_split, batch_size, num_workers, eval_batch_size)
    if batch_size % num_replicas:
        raise ValueError(
            f"batch_size={batch_size} is the global batch of {num_replicas} processes: "
            f"make it a multiple of {num_replicas}"
        )
    sets = build_datasets(name, root, download, subset, val_split, seed, augment, **dataset_options)
    for split, part in (("val", sets.val), ("test", sets.test)):
        if part is not None and len(part) < num_replicas:
            raise ValueError(f"the {split} split has {len(part)} samples, fewer than the {num_replicas} processes")
    eval_bs = math.ceil((eval_batch_size or batch_size) / num_replicas)
    shard = dict(num_workers=num_workers, seed=seed, num_replicas=num_replicas, rank=rank)
    return Loaders(
        train=make_loader(sets.train, batch_size // num_replicas, True, **shard),
        val=make_loader(sets.val, eval_bs, False, **shard) if sets.val is not None else None,
        test=make_loader(sets.test, eval_bs, False, **shard),
        info=sets.info,
    )
