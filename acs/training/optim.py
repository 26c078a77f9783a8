"""Optimizers and epoch-wise learning-rate schedules."""

from __future__ import annotations

import math
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from acs.gates import keep_biases
from acs.ops import DGConv2d


def parameter_groups(cfg: DictConfig, model: nn.Module) -> list[dict]:
    """All parameters, with DGConv2d's grouping gates and the gates' keep biases each in a group of
    their own lr and weight decay."""
    special = {
        "grouping": [m.gates for m in model.modules() if isinstance(m, DGConv2d)],
        "keep_bias": keep_biases(model),
    }
    taken = {id(p) for params in special.values() for p in params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in taken]}]
    for name, params in special.items():
        if params:
            lr, decay = cfg.lr * cfg[f"{name}_lr_scale"], cfg[f"{name}_weight_decay"]
            groups.append({"params": params, "lr": lr, "weight_decay": decay})
    return groups


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(cfg, model)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.name}'; available: sgd, adamw")


def lr_factor(cfg: DictConfig, max_epochs: int) -> Callable[[int], float]:
    """The lr multiplier of each epoch.

    Written as one LambdaLR factor rather than torch's MultiStepLR & co. because milestones here are
    fractions of the run, and because MultiStepLR keeps a ``Counter`` in its state, which
    ``torch.load(weights_only=True)`` refuses; LambdaLR's state is plain numbers.
    """
    if cfg.name == "multistep":
        milestones = sorted(round(m * max_epochs) for m in cfg.milestones)
        return lambda epoch: cfg.gamma ** sum(epoch >= m for m in milestones)
    if cfg.name == "step":
        return lambda epoch: cfg.gamma ** (epoch // cfg.step_size)
    if cfg.name == "cosine":
        return lambda epoch: (
            cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * epoch / max_epochs))
        )
    if cfg.name == "linear":
        return lambda epoch: 1 - (1 - cfg.final_factor) * epoch / max_epochs
    if cfg.name == "constant":
        return lambda epoch: 1.0
    raise ValueError(f"unknown scheduler '{cfg.name}'; available: multistep, step, cosine, linear, constant")


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, max_epochs: int):
    """An epoch-wise scheduler: call ``step()`` once at the end of every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, max_epochs))
