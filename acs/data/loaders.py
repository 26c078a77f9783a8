"""The public entry point: dataset name in, ready loaders plus the facts a model factory needs out.

Two pipelines deliver the same samples in the same order with the same augmentation policy: the
per-sample one (DataLoader workers transform each image), for every data set, and the one on the
device (on_device.py), for the data sets that fit in memory.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from acs.data.info import DatasetInfo
from acs.data.on_device import DeviceBatches, HeldSplit
from acs.data.paths import resolve_root
from acs.data.registry import DatasetSpec, get_spec
from acs.data.splits import TransformedSubset, first, train_val_split
from acs.data.transforms import CROP_FLIP, CropFlip, eval_transform, train_transform

#: The share of the device's free memory that the held splits may take when ``on_device`` is None (auto):
#: the rest is the model's and its activations'.
DEVICE_MEMORY_SHARE = 0.25

Loader = Union[DataLoader, DeviceBatches]


@dataclass
class Datasets:
    """Transformed train / val (None without val_split) / test datasets and their facts."""

    train: TransformedSubset
    val: Optional[TransformedSubset]
    test: TransformedSubset
    info: DatasetInfo


@dataclass
class Loaders:
    """Loaders of one dataset: DataLoaders, or DeviceBatches on the device; ``val`` is None unless
    ``val_split`` > 0."""

    train: Loader
    val: Optional[Loader]
    test: Loader
    info: DatasetInfo

    def set_epoch(self, epoch: int) -> None:
        """Call before each training epoch: its shuffle order then depends on (seed, epoch) only, so a
        resumed run, with any number of processes, sees the batches an uninterrupted one would."""
        if isinstance(self.train, DeviceBatches):  # its crops and flips follow (seed, epoch) too
            self.train.set_epoch(epoch)
            return
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
                num_workers: Optional[int] = None, eval_batch_size: Optional[int] = None,
                on_device: Optional[bool] = None) -> None:
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
    if on_device is not None and not isinstance(on_device, bool):
        raise ValueError(f"dataset on_device must be true, false or null (auto), got {on_device!r}")


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


def _sampler(size: int, shuffle: bool, seed: int, num_replicas: int, rank: int) -> Sampler[int]:
    """Process ``rank``'s positions of a split of ``size`` samples, in its order of the epoch."""
    if shuffle:
        # Epoch e's order is one permutation drawn from (seed, e), whatever the number of processes;
        # rank r takes its positions r, r + N, …, so the k-th batches of all ranks together are
        # exactly the k-th batch of one process with N times the batch size. The factor keeps the
        # orders of (seed, e) and (seed + 1, e - 1) apart.
        return DistributedSampler(range(size), num_replicas, rank, shuffle=True, seed=seed * 100_003)
    return ShardSampler(size, num_replicas, rank)


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
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_sampler(len(dataset), shuffle, seed, num_replicas, rank),
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
    on_device: Optional[bool] = None,
    device: Union[str, torch.device, None] = None,
    **dataset_options: Any,
) -> Loaders:
    """Train (shuffled), optional val, and test loaders for dataset ``name``.

    Arguments as in :func:`build_datasets`; ``eval_batch_size`` (default ``batch_size``) is used for
    val and test. Train shuffles in an order drawn from ``seed`` and the epoch (call
    :meth:`Loaders.set_epoch` before each epoch); random augmentations draw from torch's global RNG
    (in workers: per-worker seeds derived from the loader's generator), so seed it too for
    bit-identical runs. Nothing is dropped (drop_last=False); memory is pinned when CUDA is available.
    With ``num_replicas`` processes (torchrun), the loaders hold process ``rank``'s share: batch sizes
    are global and each process gets 1/num_replicas of every batch (``batch_size`` must divide);
    the training order is the same as in one process, and val/test are split without repeats.
    ``on_device=True`` holds each split as one tensor on ``device`` (default: the CPU) and makes the
    batches there, with the same order, augmentation policy and normalisation, its crops and flips
    drawn from ``seed`` and the epoch (workers and pinning then play no part); ``None`` does so on a
    CUDA device where the data set can be held and takes at most :data:`DEVICE_MEMORY_SHARE` of its
    free memory, else it uses DataLoaders; ``False`` always uses DataLoaders.
    ``dataset_options``: svhn ``extra``; digits ``image_size``; synthetic ``train_size``, ``test_size``,
    ``num_classes``, ``channels``, ``image_size``, ``noise``, ``data_seed``.
    """
    _check_args(subset, val_split, batch_size, num_workers, eval_batch_size, on_device)
    spec = get_spec(name)
    if on_device and spec.tensors is None:
        raise ValueError(
            f"dataset {spec.name} is read sample by sample and cannot be held on the device: "
            "set dataset.on_device=false (or null)"
        )
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
    device = torch.device(device or "cpu")
    policy = CROP_FLIP.get(spec.augmentation) if augment else None
    if on_device is None:
        on_device = device.type == "cuda" and spec.tensors is not None and _fits(sets, spec, policy, device)
    if on_device:
        per_rank = batch_size // num_replicas
        return _device_loaders(sets, spec, policy, per_rank, eval_bs, seed, num_replicas, rank, device)
    shard = dict(num_workers=num_workers, seed=seed, num_replicas=num_replicas, rank=rank)
    return Loaders(
        train=make_loader(sets.train, batch_size // num_replicas, True, **shard),
        val=make_loader(sets.val, eval_bs, False, **shard) if sets.val is not None else None,
        test=make_loader(sets.test, eval_bs, False, **shard),
        info=sets.info,
    )


def _fits(sets: Datasets, spec: DatasetSpec, policy: Optional[CropFlip], device: torch.device) -> bool:
    """Whether the raw train and test splits, held on the CUDA ``device``, take at most
    :data:`DEVICE_MEMORY_SHARE` of its free memory."""
    c, h, w = sets.info.input_size
    pad = 2 * policy.padding if policy is not None else 0
    pixels = len(sets.train.base) * (h + pad) * (w + pad) + len(sets.test.base) * h * w
    # Sets read from image files are held as uint8, the generated ones (digits, synthetic) as float32.
    held = pixels * c * (1 if spec.from_pil else 4)
    return held <= DEVICE_MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]


def _device_loaders(
    sets: Datasets, spec: DatasetSpec, policy: Optional[CropFlip], batch_size: int, eval_batch_size: int,
    seed: int, num_replicas: int, rank: int, device: torch.device,
) -> Loaders:  # fmt: skip
    """The loaders of ``sets`` on ``device``: each raw split held once (val reads train's), each loader
    with the sampler its DataLoader would have."""
    train = HeldSplit(*spec.tensors(sets.train.base), sets.info, policy.padding if policy else 0, device)
    test = HeldSplit(*spec.tensors(sets.test.base), sets.info, 0, device)

    def batches(held: HeldSplit, part: TransformedSubset, shuffle: bool, size: int) -> DeviceBatches:
        sampler = _sampler(len(part), shuffle, seed, num_replicas, rank)
        return DeviceBatches(held, part, sampler, size, policy if shuffle else None, seed)

    return Loaders(
        train=batches(train, sets.train, True, batch_size),
        val=batches(train, sets.val, False, eval_batch_size) if sets.val is not None else None,
        test=batches(test, sets.test, False, eval_batch_size),
        info=sets.info,
    )
