"""Static facts about a dataset: what a model factory needs, known without touching disk."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and label facts of a dataset as the loaders deliver it (after transforms).

    ``input_size`` is (C, H, W), the convention of ``model.dense_macs(input_size)``.
    ``mean``/``std`` are the per-channel normalisation constants applied by the transforms
    (None: the data is delivered as is, e.g. the already standardised synthetic set).
    """

    name: str
    num_classes: int
    input_size: Tuple[int, int, int]
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    @property
    def in_channels(self) -> int:
        return self.input_size[0]
