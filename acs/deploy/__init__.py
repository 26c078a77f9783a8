"""Deployment: executors whose work really shrinks with the per-sample masks.

``to_dynamic(model)`` converts a trained model into an ``nn.Module`` whose ``forward(x)`` returns
``acs.Output(logits, macs, masks)`` like the model (eval-mode semantics), where ``macs`` are the
MACs it actually executed per sample.
"""
from __future__ import annotations

from torch import nn

from acs.deploy.dynamic import DynamicDenseNet
from acs.deploy.resnext import DynamicResNeXt
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt


def to_dynamic(model: nn.Module, script: bool = True) -> nn.Module:
    """The deployment executor of ``model`` (a :class:`DenseNet` or :class:`GResNeXt`).

    Uses the model's eval-mode behaviour (BatchNorm running statistics) whatever its mode, and
    never modifies it: the executor holds copies. ``script`` compiles a DenseNet executor's
    per-sample path with TorchScript (faster at batch 1; same results). Runs every gate design
    (``acs``, ``ddi``, ``aig``, ``fbs``; see :mod:`acs.deploy.gates`). Raises NotImplementedError
    for structures it cannot execute exactly (a gate class without executor, a grouped 3×3 conv
    reading gated inputs without a bottleneck).
    """
    if isinstance(model, DenseNet):
        device = model.stem.weight.device
        executor = DynamicDenseNet(model).to(device).eval()
        return executor.script() if script else executor
    if isinstance(model, GResNeXt):
        return DynamicResNeXt(model).to(model.conv1.weight.device).eval()
    raise TypeError(f"to_dynamic supports DenseNet and GResNeXt models, got {type(model).__name__}")


__all__ = ["DynamicDenseNet", "DynamicResNeXt", "to_dynamic"]
