"""The catalogue of datasets: static facts, options, and how to read each split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from torch.utils.data import Dataset
from torchvision import datasets as tvd

from acs.data import digits, sources
from acs.data.info import DatasetInfo
from acs.data.paths import resolve_root
from acs.data.synthetic import SyntheticDataset
from acs.registry import Registry

# (root, train, download, options) -> raw dataset of the split, without transform.
Reader = Callable[[Path, bool, bool, Dict[str, Any]], Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    channels: int
    image_size: int
    read: Reader
    augmentation: str = "none"
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    #: Samples are PIL images (torchvision sets) rather than float tensors (digits, synthetic).
    from_pil: bool = True
    #: Accepted dataset options and their defaults; anything else is rejected as a typo.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Options that change the delivered shape or classes: option name -> info field it sets.
    shape_options: Mapping[str, str] = field(default_factory=dict)
    #: Raises DatasetNotFoundError when the files are missing and will not be downloaded (None: no files).
    check: Optional[sources.Check] = None
    #: A split as two tensors, for the pipeline on the device (None: read sample by sample, e.g. from folders).
    tensors: Optional[sources.Tensors] = None

    def resolve_options(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        DATASETS.check_options(self.name, options)
        return {**self.options, **options}

    def info(self, options: Mapping[str, Any]) -> DatasetInfo:
        opts = self.resolve_options(options)
        facts = {"num_classes": self.num_classes, "channels": self.channels, "image_size": self.image_size}
        facts.update({target: int(opts[key]) for key, target in self.shape_options.items()})
        size = facts["image_size"]
        return DatasetInfo(self.name, facts["num_classes"], (facts["channels"], size, size), self.mean, self.std)


def _tv(reader: Callable[..., Dataset], *args: Any) -> Reader:
    return lambda root, train, download, opts: reader(*args, root, train, download, **opts)


def _synthetic(root: Path, train: bool, download: bool, opts: Dict[str, Any]) -> Dataset:
    size = opts["train_size"] if train else opts["test_size"]
    return SyntheticDataset(
        size, opts["num_classes"], opts["channels"], opts["image_size"], opts["noise"], opts["data_seed"], train
    )


DATASETS: Registry[DatasetSpec] = Registry("dataset", options=lambda spec: spec.options)
for _spec in [
    # Means/stds: per-channel statistics of each training set, pixels scaled to [0, 1].
    DatasetSpec("cifar10", 10, 3, 32, _tv(sources.cifar, "cifar10", tvd.CIFAR10), "cifar",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                check=sources.require("cifar10", lambda opts: sources.cifar_files(tvd.CIFAR10)),
                tensors=sources.cifar_tensors),
    DatasetSpec("cifar100", 100, 3, 32, _tv(sources.cifar, "cifar100", tvd.CIFAR100), "cifar",
                (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                check=sources.require("cifar100", lambda opts: sources.cifar_files(tvd.CIFAR100)),
                tensors=sources.cifar_tensors),
    DatasetSpec("svhn", 10, 3, 32, _tv(sources.svhn), "svhn",
                (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), options={"extra": False},
                check=sources.require("svhn", lambda opts: sources.svhn_files(opts["extra"])),
                tensors=sources.svhn_tensors),
    DatasetSpec("mnist", 10, 1, 28, _tv(sources.mnist, "mnist", tvd.MNIST), "none", (0.1307,), (0.3081,),
                check=sources.require("mnist", lambda opts: sources.mnist_files(tvd.MNIST)),
                tensors=sources.mnist_tensors),
    DatasetSpec("fashion_mnist", 10, 1, 28, _tv(sources.mnist, "fashion_mnist", tvd.FashionMNIST), "fashion",
                (0.2860,), (0.3530,),
                check=sources.require("fashion_mnist", lambda opts: sources.mnist_files(tvd.FashionMNIST)),
                tensors=sources.mnist_tensors),
    DatasetSpec("imagenet", 1000, 3, 224, _tv(sources.imagenet), "imagenet",
                (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), check=sources.check_imagenet),
    DatasetSpec("digits", 10, 1, digits.DEFAULT_IMAGE_SIZE,
                lambda root, train, download, opts: digits.DigitsDataset(train, opts["image_size"]),
                "none", digits.MEAN, digits.STD, from_pil=False,
                options={"image_size": digits.DEFAULT_IMAGE_SIZE}, shape_options={"image_size": "image_size"},
                tensors=sources.data_targets),
    DatasetSpec("synthetic", 10, 3, 32, _synthetic, "none", from_pil=False,
                options={"train_size": 512, "test_size": 256, "num_classes": 10, "channels": 3,
                         "image_size": 32, "noise": 1.0, "data_seed": 0},
                shape_options={"num_classes": "num_classes", "channels": "channels", "image_size": "image_size"},
                tensors=sources.data_targets),
]:
    DATASETS.add(_spec.name, _spec)


def list_datasets() -> List[str]:
    """Names accepted by :func:`dataset_info` and :func:`build_loaders`, sorted."""
    return DATASETS.names()


def get_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name.lower().replace("-", "_"))


def fits_in_memory(name: str) -> bool:
    """Whether ``name``'s splits can be held as tensors, for the pipeline on the device (``on_device``)."""
    return get_spec(name).tensors is not None


def dataset_info(name: str, **options: Any) -> DatasetInfo:
    """num_classes, input_size (C, H, W) and normalisation of ``name``, without touching disk.

    ``options`` are the dataset options that change these facts (digits: image_size; synthetic:
    num_classes, channels, image_size); other valid options are accepted and ignored.
    """
    return get_spec(name).info(options)


def check_files(name: str, root: Union[str, Path, None] = None, download: bool = False, **options: Any) -> None:
    """Raises DatasetNotFoundError when files that ``name`` reads are missing from ``root`` and
    ``download`` will not fetch them. It only looks for the files (they are checked when read), so a
    run can call it before it makes its folder."""
    spec = get_spec(name)
    if spec.check is not None:
        spec.check(resolve_root(root), download, spec.resolve_options(options))
