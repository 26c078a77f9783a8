"""Turning config sections into the objects a run needs: device, seeds, data, model."""

from __future__ import annotations

import logging
import random
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from acs.data import DeviceBatches, Loaders, build_loaders
from acs.models import MODELS, create_model
from acs.training import distributed
from acs.training.config import ConfigError, check_device

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = torch.cuda.is_available()


def build_data(cfg: DictConfig, seed: int, device: Optional[torch.device] = None) -> Loaders:
    """The loaders of ``cfg``, batches made on ``device`` (default: the CPU) where ``cfg.on_device`` says so."""
    try:
        loaders = _build_loaders(cfg, seed, device)
    except ValueError as error:  # bad option values: a config problem, reported as one line
        raise ConfigError(str(error)) from error
    if isinstance(loaders.train, DeviceBatches):  # say so: with on_device=null, the run chose it
        log.info("data: each split held on %s, batches made there (dataset.on_device)", loaders.train.held.device)
    return loaders


def _build_loaders(cfg: DictConfig, seed: int, device: Optional[torch.device]) -> Loaders:
    return build_loaders(
        cfg.name,
        root=cfg.root,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        num_workers=cfg.num_workers,
        download=cfg.download,
        subset=cfg.subset,
        val_split=cfg.val_split,
        seed=seed,
        augment=cfg.augment,
        # Under torchrun this process's share; batch sizes stay global.
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
        on_device=cfg.on_device,
        device=device,
        **OmegaConf.to_container(cfg.options, resolve=True),
    )


def build_model(model_cfg: DictConfig, gate_cfg: DictConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The registry model that ``model_cfg`` names, sized for the data, gated as ``gate_cfg`` says.

    Options a model family does not have are config errors, not silently dropped arguments.
    """
    kwargs = {"num_classes": num_classes, "in_channels": in_channels}
    gate = OmegaConf.to_container(gate_cfg, resolve=True)
    if "gate" in MODELS.options(model_cfg.name):
        kwargs["gate"] = gate
    elif gate["name"] != "none":
        raise ConfigError(f"model {model_cfg.name} has no per-sample gates; run it with gate=none")
    options = {
        "conv": model_cfg.conv,
        "groups": model_cfg.groups,
        "growth_rate": model_cfg.growth_rate,
        "pretrained": model_cfg.pretrained or None,
    }
    kwargs.update((key, value) for key, value in options.items() if value is not None)
    try:
        return create_model(model_cfg.name, **kwargs)
    except ValueError as error:
        raise ConfigError(str(error)) from error
