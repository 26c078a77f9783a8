"""Per-dataset augmentation and normalisation pipelines.

Train pipelines augment; eval pipelines (test split, held-out validation split, and train when
``augment=False``) only convert and normalise, so evaluation is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torchvision.transforms import v2 as T

from acs.data.info import DatasetInfo

Transform = Callable[[object], torch.Tensor]

# Augmentation policies. The choice per dataset follows common practice for each benchmark:
#   cifar    random 32 crop with 4 px zero padding + horizontal flip (the DenseNet/ResNet recipe)
#   svhn     random crop with padding, no flip (mirrored digits are different or invalid digits)
#   fashion  light: random 28 crop with 2 px padding + flip (garments are left/right symmetric)
#   imagenet RandomResizedCrop(224) + flip; eval Resize(256) + CenterCrop(224)
#   none     MNIST, digits, synthetic: digits are small and centred, shifts/flips change them
AUGMENTATIONS = ("cifar", "svhn", "fashion", "imagenet", "none")


@dataclass(frozen=True)
class CropFlip:
    """A random crop of the image's own size from the image zero-padded by ``padding`` pixels on each
    side (0: no crop), then a horizontal flip with probability 1/2 where ``flip``."""

    padding: int
    flip: bool


#: The policies that are a crop and a flip: both pipelines, per sample and on the device, read them here.
CROP_FLIP: Dict[str, CropFlip] = {
    "cifar": CropFlip(4, True),
    "svhn": CropFlip(4, False),
    "fashion": CropFlip(2, True),
    "none": CropFlip(0, False),
}


def _to_float(pil_or_uint8: bool) -> List[Transform]:
    # PIL / uint8 sources become float in [0, 1]; float tensor sources (digits) are already there.
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True)] if pil_or_uint8 else []


def _normalise(info: DatasetInfo) -> List[Transform]:
    if info.mean is None or info.std is None:
        return []
    return [T.Normalize(list(info.mean), list(info.std))]


def _augment_ops(policy: str, info: DatasetInfo) -> List[Transform]:
    _, h, _ = info.input_size
    if policy in CROP_FLIP:
        crop_flip = CROP_FLIP[policy]
        crop = [T.RandomCrop(h, padding=crop_flip.padding)] if crop_flip.padding else []
        return [*crop, *([T.RandomHorizontalFlip()] if crop_flip.flip else [])]
    if policy == "imagenet":
        return [T.RandomResizedCrop(h, antialias=True), T.RandomHorizontalFlip()]
    raise ValueError(f"unknown augmentation policy '{policy}'; available: {', '.join(AUGMENTATIONS)}")


def _eval_resize_ops(policy: str, info: DatasetInfo, resize: Optional[int]) -> List[Transform]:
    if policy == "imagenet":
        _, h, _ = info.input_size
        # Standard ratio 256/224 unless the caller chose a size.
        return [T.Resize(resize or round(h * 256 / 224), antialias=True), T.CenterCrop(h)]
    return []


def train_transform(
    info: DatasetInfo, policy: str, augment: bool = True, from_pil: bool = True, resize: Optional[int] = None
) -> Transform:
    """Pipeline for training samples; identical to :func:`eval_transform` when ``augment`` is False."""
    if not augment:
        return eval_transform(info, policy, from_pil, resize)
    ops: Sequence[Transform] = [*_augment_ops(policy, info), *_to_float(from_pil), *_normalise(info)]
    return T.Compose([*ops, T.ToPureTensor()])


def eval_transform(info: DatasetInfo, policy: str, from_pil: bool = True, resize: Optional[int] = None) -> Transform:
    """Deterministic pipeline for test and validation samples."""
    ops = [*_eval_resize_ops(policy, info, resize), *_to_float(from_pil), *_normalise(info)]
    return T.Compose([*ops, T.ToPureTensor()])
