"""Raw datasets read through torchvision, with torchvision's failures turned into DatasetNotFoundError.

Each loader returns the dataset without a transform (samples are PIL images); transforms are
attached later so that a held-out validation part can use eval transforms on the same images.
The file lists in error messages are read from torchvision's own class attributes, so they name
exactly what torchvision looks for. torchvision's integrity checks (md5 for CIFAR/SVHN) stay on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List

from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tvd

from acs.data.errors import DatasetNotFoundError, missing_files, not_found


def _load(name: str, folder: Path, expected: List[str], download: bool, make: Callable[[], Dataset]) -> Dataset:
    try:
        return make()
    except (RuntimeError, OSError) as err:  # torchvision: RuntimeError; failed download: URLError (an OSError)
        raise not_found(name, folder, expected, download, err) from err


def cifar_files(cls: type) -> List[str]:
    """Files (relative to root) that torchvision's CIFAR class checks, e.g. cifar-10-batches-py/data_batch_1."""
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [f"{cls.base_folder}/{f}" for f in names]


def mnist_files(cls: type) -> List[str]:
    """Uncompressed idx files torchvision's MNIST-style class reads, e.g. MNIST/raw/train-images-idx3-ubyte."""
    return [f"{cls.__name__}/raw/{url.rsplit('/', 1)[-1].removesuffix('.gz')}" for url, _ in cls.resources]


def svhn_files(extra: bool) -> List[str]:
    splits = ["train", "test"] + (["extra"] if extra else [])
    return [tvd.SVHN.split_list[s][1] for s in splits]


def cifar(name: str, cls: type, root: Path, train: bool, download: bool) -> Dataset:
    return _load(name, root, cifar_files(cls), download, lambda: cls(str(root), train=train, download=download))


def mnist(name: str, cls: type, root: Path, train: bool, download: bool) -> Dataset:
    return _load(name, root, mnist_files(cls), download, lambda: cls(str(root), train=train, download=download))


def svhn(root: Path, train: bool, download: bool, extra: bool = False) -> Dataset:
    expected = svhn_files(extra)

    def split(s: str) -> Dataset:
        return _load("svhn", root, expected, download, lambda: tvd.SVHN(str(root), split=s, download=download))

    if not train:
        return split("test")
    # 'extra' holds 531k easier digits; common SVHN recipes train on train+extra.
    return ConcatDataset([split("train"), split("extra")]) if extra else split("train")


IMAGENET_EXPECTED = ["imagenet/train/<class>/<image>", "imagenet/val/<class>/<image>"]


def imagenet(root: Path, train: bool, download: bool) -> Dataset:
    """ImageNet-1k as an ImageFolder at <root>/imagenet/{train,val}/<wnid>/*.JPEG; never downloaded."""
    folder = root / "imagenet" / ("train" if train else "val")
    try:
        return tvd.ImageFolder(str(folder))
    except (FileNotFoundError, NotADirectoryError) as err:
        missing = missing_files(root, ["imagenet/train", "imagenet/val"])
        reason = f"not found (missing {', '.join(missing)})" if missing else f"has no usable images ({err})"
        hint = (
            "ImageNet cannot be downloaded automatically (download=true does nothing for it): get ILSVRC2012 "
            "from image-net.org and arrange train/ and val/ as one sub-folder per class (wnid)."
        )
        raise DatasetNotFoundError("imagenet", root, IMAGENET_EXPECTED, reason, hint) from err
