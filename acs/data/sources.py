"""Raw datasets read through torchvision, with torchvision's failures turned into DatasetNotFoundError
(and, for an image folder, a damaged image into DataFileError when it is loaded).

Each loader returns the dataset without a transform (samples are PIL images); transforms are
attached later so that a held-out validation part can use eval transforms on the same images.
The file lists in error messages are read from torchvision's own class attributes, so they name
exactly what torchvision looks for. torchvision's integrity checks (md5 for CIFAR/SVHN) stay on.
Each set also has a check that its files are on disk, cheap enough to run before a run starts, and
the sets that fit in memory give their split as two tensors, for the pipeline on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tvd
from torchvision.datasets.folder import default_loader

from acs.data.errors import DataFileError, DatasetNotFoundError, missing_files, not_found
from acs.messages import one_line

# (root, download, options) -> None, or DatasetNotFoundError when files are missing and will not be fetched.
Check = Callable[[Path, bool, Dict[str, Any]], None]
# raw dataset of a split -> (images (N, C, H, W), labels (N,) int64): the pixels its samples are made of.
Tensors = Callable[[Dataset], Tuple[Tensor, Tensor]]


def _load(name: str, folder: Path, expected: List[str], download: bool, make: Callable[[], Dataset]) -> Dataset:
    try:
        return make()
    except (ImportError, MemoryError):  # this machine's problem (scipy missing for SVHN), not the files'
        raise
    except Exception as err:  # noqa: BLE001 - see below
        # Whatever torchvision's readers hit is the files' fault: a missing file or a failed md5 check
        # is a RuntimeError, a failed download a URLError, but a damaged file fails inside the parser
        # (an AssertionError in the idx reader, UnpicklingError or EOFError for a CIFAR pickle, a
        # ValueError from scipy's loadmat). The cause is named in the message, its traceback chained.
        raise not_found(name, folder, expected, download, err) from err


def require(name: str, files: Callable[[Dict[str, Any]], List[str]]) -> Check:
    """The check of a torchvision set: the ``files(options)`` it reads are on disk, unless they will be
    downloaded; it only looks for the files, so that a run can stop before it makes its folder."""

    def check(root: Path, download: bool, options: Dict[str, Any]) -> None:
        expected = files(options)
        if not download and missing_files(root, expected):
            raise not_found(name, root, expected, download)

    return check


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


def cifar_tensors(raw: Dataset) -> Tuple[Tensor, Tensor]:
    return torch.from_numpy(raw.data).permute(0, 3, 1, 2), torch.as_tensor(raw.targets, dtype=torch.long)


def mnist_tensors(raw: Dataset) -> Tuple[Tensor, Tensor]:
    return raw.data.unsqueeze(1), raw.targets.long()


def svhn_tensors(raw: Dataset) -> Tuple[Tensor, Tensor]:
    parts = raw.datasets if isinstance(raw, ConcatDataset) else [raw]  # train + extra
    images = torch.cat([torch.from_numpy(part.data) for part in parts])
    return images, torch.cat([torch.from_numpy(part.labels).long() for part in parts])


def data_targets(raw: Dataset) -> Tuple[Tensor, Tensor]:
    """Sets generated as tensors (digits, synthetic)."""
    return raw.data, raw.targets


IMAGENET_EXPECTED = ["imagenet/train/<class>/<image>", "imagenet/val/<class>/<image>"]
IMAGENET_FOLDERS = ["imagenet/train", "imagenet/val"]


def _imagenet_error(root: Path, reason: str) -> DatasetNotFoundError:
    hint = (
        "ImageNet cannot be downloaded automatically (download=true does nothing for it): get ILSVRC2012 "
        "from image-net.org and arrange train/ and val/ as one sub-folder per class (wnid)."
    )
    return DatasetNotFoundError("imagenet", root, IMAGENET_EXPECTED, reason, hint)


def check_imagenet(root: Path, download: bool, options: Dict[str, Any]) -> None:
    """Both folders exist (their images are read, and checked, only when loaded)."""
    missing = missing_files(root, IMAGENET_FOLDERS)
    if missing:
        raise _imagenet_error(root, f"not found (missing {', '.join(missing)})")


def load_image(path: str) -> Any:
    """torchvision's image loader, with a damaged image one line naming it. An image folder is read
    image by image while training (checking them all first would take longer than an epoch), so
    this is where a damaged file shows."""
    try:
        return default_loader(path)
    except Exception as err:  # noqa: BLE001 - PIL: OSError (truncated, unidentified), SyntaxError, ValueError
        raise DataFileError(f"cannot read image {path} ({one_line(err)}): replace or delete the file") from err


def imagenet(root: Path, train: bool, download: bool) -> Dataset:
    """ImageNet-1k as an ImageFolder at <root>/imagenet/{train,val}/<wnid>/*.JPEG; never downloaded."""
    folder = root / "imagenet" / ("train" if train else "val")
    try:
        return tvd.ImageFolder(str(folder), loader=load_image)
    except OSError as err:  # no such folder, no image in it, or one that cannot be listed
        missing = missing_files(root, IMAGENET_FOLDERS)
        reason = f"not found (missing {', '.join(missing)})" if missing else f"has no usable images ({one_line(err)})"
        raise _imagenet_error(root, reason) from err
