"""Data layer: torchvision benchmarks, sklearn digits and a synthetic set behind one entry point.

    loaders = build_loaders("cifar10", root=None, batch_size=64, val_split=0.1)
    model = create_model("densenet40", num_classes=loaders.num_classes, in_channels=loaders.in_channels)

``root=None`` reads ``$ACS_DATA``, else ``./data``. Missing or damaged files raise :class:`DatasetNotFoundError`
(a damaged image of an image folder, found when loaded: :class:`DataFileError`).
"""
from acs.data.digits import DigitsDataset
from acs.data.errors import DataFileError, DatasetNotFoundError
from acs.data.info import DatasetInfo
from acs.data.loaders import Datasets, Loaders, build_datasets, build_loaders, make_loader
from acs.data.on_device import DeviceBatches
from acs.data.paths import ENV_VAR, resolve_root
from acs.data.registry import check_files, dataset_info, fits_in_memory, list_datasets
from acs.data.synthetic import SyntheticDataset

__all__ = [
    "DataFileError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Datasets",
    "DeviceBatches",
    "DigitsDataset",
    "ENV_VAR",
    "Loaders",
    "SyntheticDataset",
    "build_datasets",
    "build_loaders",
    "check_files",
    "dataset_info",
    "fits_in_memory",
    "list_datasets",
    "make_loader",
    "resolve_root",
]
