"""Deployment: executors whose work really shrinks with the per-sample masks.

``to_dynamic(model)`` converts a trained model into an ``nn.Module`` whose ``forward(x)`` returns
``acs.Output(logits, macs, masks)`` like the model (eval-mode semantics), where ``macs`` are the
MACs it actually executed per sample. ``to_thin(model, input_size)`` turns a model with static gates
(``gate=static``) into the physically thinner ungated model it amounts to.

Importing this package loads the executor's native kernels (:mod:`acs.deploy.native`, built on the
first import where a C++ compiler is found), so that ``import acs.deploy`` is all a process needs
before ``torch.jit.load`` of a deployed file that calls them; where they do not load, it imports
all the same and the executors run tensor operations.
"""
from __future__ import annotations

import warnings
from typing import Optional

from torch import nn

from acs.deploy import native as native_kernels
from acs.deploy.dynamic import DynamicDenseNet
from acs.deploy.native import NativeUnavailable
from acs.deploy.resnext import DynamicResNeXt
from acs.deploy.thin import ThinDenseNet, to_thin
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt


def to_dynamic(model: nn.Module, script: bool = True, native: Optional[bool] = None) -> nn.Module:
    """The deployment executor of ``model`` (a :class:`DenseNet` or :class:`GResNeXt`).

    Uses the model's eval-mode behaviour (BatchNorm running statistics) whatever its mode, and
    never modifies it: the executor holds copies. ``script`` compiles a DenseNet executor's
    per-sample path with TorchScript (faster at batch 1; same results). Runs every gate design
    (``acs``, ``ddi``, ``aig``, ``fbs``; see :mod:`acs.deploy.gates`). Raises NotImplementedError
    for structures it cannot execute exactly (a gate class without executor, a grouped 3×3 conv
    reading gated inputs without a bottleneck).

    ``native`` (DenseNets on CPU): each dense layer with its ACS gate, and each transition, as one
    call of a compiled kernel (:mod:`acs.deploy.native`; several times less overhead at batch 1,
    same results). ``None`` uses it where it builds and warns once where it does not; ``True``
    raises NativeUnavailable there; ``False`` runs tensor operations only.
    """
    if isinstance(model, DenseNet):
        device = model.stem.weight.device
        if native and device.type != "cpu":
            raise ValueError(f"the native kernels run on CPU; the model is on {device}")
        if native is None:
            native = device.type == "cpu" and _native_or_warn()
        executor = DynamicDenseNet(model, native).to(device).eval()
        return executor.script() if script else executor
    if isinstance(model, GResNeXt):
        return DynamicResNeXt(model).to(model.conv1.weight.device).eval()
    raise TypeError(f"to_dynamic supports DenseNet and GResNeXt models, got {type(model).__name__}")


def _native_or_warn() -> bool:
    global _warned
    try:
        native_kernels.load()
    except NativeUnavailable as error:
        if not _warned:
            warnings.warn(f"{error}; the executor runs tensor operations only (slower at batch 1)")
            _warned = True
        return False
    return True


_warned = False
native_kernels.available()

__all__ = ["DynamicDenseNet", "DynamicResNeXt", "NativeUnavailable", "ThinDenseNet", "to_dynamic", "to_thin"]
