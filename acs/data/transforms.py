"""Per-dataset augmentation and normalisation pipelines.

Train pipelines augment; eval pipelines (test split, held-out validation split, and train when
``augment=False``) only convert and normalise, so evaluation is deterministic.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

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


def _to_float(pil_or_uint8: bool) -> List[Transform]:
    # PIL / uint8 sources become float in [0, 1]; float tensor sources (digits) are already there.
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True)] if pil_or_uint8 else []


def _normalise(info: DatasetInfo) -> List[Transform]:
    if info.mean is None or info.std is None:
        return []
    return [T.Normalize(list(info.mean), list(info.std))]


def _augment_ops(policy: str, info: DatasetInfo) -> List[Transform]:
    _, h, _ = info.input_size
    if policy == "cifar":
        return [T.RandomCrop(h, padding=4), T.RandomHorizontalFlip()]
    if policy == "svhn":
        return [T.RandomCrop(h, padding=4)]
    if policy == "fashion":
        return [T.RandomCrop(h, padding=2), T.RandomHorizontalFlip()]
    if policy == "imagenet":
        return [T.RandomResizedCrop(h, antialias=True), T.RandomHorizontalFlip()]
    if policy == "none":
        return []
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
