"""Checkpoints: plain tensors and primitives, written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from acs.data import DatasetInfo, dataset_info
from acs.files import atomic_write
from acs.messages import one_line
from acs.training.builders import build_model
from acs.training.config import Config

FORMAT = "acs-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or made for another model; one clear line."""


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    """Writes ``state`` to ``path`` atomically: a crash leaves the previous checkpoint intact."""
    atomic_write(path, lambda file: torch.save({"format": FORMAT, **state}, file))


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt, truncated or not a PyTorch checkpoint"
        ) from error
    marker = state.get("format") if isinstance(state, dict) else None
    if isinstance(marker, str) and marker.startswith("acs-checkpoint-") and marker != FORMAT:
        raise CheckpointError(
            f"{path} was written by another version of acs (format '{marker}'; this version reads '{FORMAT}')"
        )
    if marker != FORMAT:
        raise CheckpointError(f"{path} is not an ACS checkpoint (no '{FORMAT}' marker)")
    return state


def load_model_state(model: nn.Module, state: Dict[str, Any], model_name: str, path: Union[str, Path]) -> None:
    """Strict load; a checkpoint of another model or shape is one clear error, not a partial load."""
    saved_name = state.get("model_name")
    if saved_name != model_name:
        raise CheckpointError(f"{path} holds a '{saved_name}' model, but this run builds '{model_name}'")
    own = model.state_dict()
    weights = state["model"]
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", wrong))
            if keys
        )
        raise CheckpointError(f"{path} does not fit this {model_name} ({detail})")
    model.load_state_dict(weights)


class TrainedModel(NamedTuple):
    """A run's model rebuilt from its checkpoint by :func:`load_trained_model`: the ``model``
    (weights loaded, evaluation mode), the ``config`` it was built from (the checkpoint's ``model``,
    ``gate`` and ``dataset`` sections, checked by the schema), the data set's ``info`` and the
    checkpoint's ``state``."""

    model: nn.Module
    config: DictConfig
    info: DatasetInfo
    state: Dict[str, Any]

    def ungated(self) -> nn.Module:
        """The same architecture with ``gate=none`` and fresh weights (the dense reference)."""
        gate = OmegaConf.create({"name": "none"})
        return build_model(self.config.model, gate, self.info.num_classes, self.info.in_channels)


def load_trained_model(path: Union[str, Path]) -> TrainedModel:
    """The model of a training checkpoint, rebuilt from the config saved with it (never from
    guessed shapes). A missing, corrupt or foreign file, or a saved config this version cannot
    build, is a CheckpointError of one line."""
    state = load_checkpoint(path)
    try:
        saved = {key: state["config"][key] for key in ("model", "gate", "dataset")}
        # The weights come from the checkpoint: never fetch pretrained ones again.
        saved["model"] = {**saved["model"], "pretrained": False}
        config = OmegaConf.merge(OmegaConf.structured(Config), saved)
        dataset = config.dataset
        info = dataset_info(dataset.name, **OmegaConf.to_container(dataset.options, resolve=True))
        model = build_model(config.model, config.gate, info.num_classes, info.in_channels)
    except (KeyError, TypeError, ValueError, OmegaConfBaseException) as error:
        reason = one_line(error)
        raise CheckpointError(f"{path}: this version of acs cannot build its saved config ({reason})") from error
    load_model_state(model, state, config.model.name, path)
    return TrainedModel(model.eval(), config, info, state)


class WarmStart(NamedTuple):
    """What :func:`load_matching_weights` took from a checkpoint: the names of the model's tensors
    it loaded, of those it left fresh (absent from the checkpoint, or of another shape), and of the
    checkpoint's tensors it did not use."""

    loaded: List[str]
    fresh: List[str]
    unused: List[str]


def load_matching_weights(model: nn.Module, path: Union[str, Path]) -> WarmStart:
    """Loads into ``model`` every tensor of the checkpoint at ``path`` whose name and shape match
    (the backbone of an ungated run into a gated model, say) and leaves the rest as it is. A
    checkpoint that fits none of the model's tensors is a CheckpointError."""
    weights = load_checkpoint(path)["model"]
    own = model.state_dict()
    loaded = sorted(k for k in own if k in weights and weights[k].shape == own[k].shape)
    if not loaded:
        raise CheckpointError(f"{path} has no tensor that fits this model (no name with the same shape)")
    model.load_state_dict({k: weights[k] for k in loaded}, strict=False)
    fresh = sorted(set(own) - set(loaded))
    return WarmStart(loaded, fresh, sorted(set(weights) - set(loaded)))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any], path: Union[str, Path]) -> None:
    """The optimizer's state from a checkpoint; parameter groups that do not match (a checkpoint
    written before DGConv2d's grouping gates had a group of their own, or by another optimizer
    layout) are one clear error."""
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: its optimizer state does not fit this run's optimizer ({error})") from error


class TrainingParts(NamedTuple):
    """What a training checkpoint restores into: the model and its optimisation state."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@dataclass
class Progress:
    """How far a run has come: epochs done, its best epoch so far (epoch, metric, value and that
    epoch's metrics) and its W&B run id (so that a resumed run logs into the same W&B run)."""

    epoch: int = 0
    best: Optional[Dict[str, Any]] = None
    wandb_id: Optional[str] = None

    def finish_epoch(self, record: Dict[str, Any], metric: str) -> bool:
        """Counts the epoch whose metrics are ``record``; True when it is the best so far by ``metric``."""
        self.epoch = record["epoch"]
        improved = self.best is None or record[metric] > self.best["value"]
        if improved:
            self.best = {"epoch": self.epoch, "metric": metric, "value": record[metric], "metrics": record}
        return improved


def save_training_state(
    paths: Sequence[Path], parts: TrainingParts, progress: Progress, model_name: str, config: Dict[str, Any],
    dense_macs: int,
) -> None:  # fmt: skip
    """Writes one training checkpoint to each of ``paths``: the model and optimisation state, the
    progress, every RNG state, and what the model is (``model_name``, the resolved ``config``, its
    ``dense_macs``) for evaluation and deployment. :func:`load_training_state` reads it back."""
    state = {
        "model_name": model_name,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "epoch": progress.epoch,
        "best": progress.best,
        "rng": rng_state(),
        "wandb_id": progress.wandb_id,
        "config": config,
        "dense_macs": dense_macs,
    }
    for path in paths:
        save_checkpoint(path, state)


def load_training_state(
    path: Union[str, Path], parts: TrainingParts, model_name: str, map_location: Union[str, torch.device] = "cpu"
) -> Progress:
    """Restores a checkpoint of :func:`save_training_state` into ``parts`` and the RNGs; returns its
    progress. A checkpoint of another model or optimizer layout is a CheckpointError."""
    state = load_checkpoint(path, map_location=map_location)
    load_model_state(parts.model, state, model_name, path)
    load_optimizer_state(parts.optimizer, state, path)
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    return Progress(state["epoch"], state["best"], state["wandb_id"])


def rng_state() -> Dict[str, Any]:
    """Every random generator a run draws from, as tensors and primitives."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
