"""Model registry: factory functions register themselves by name, as in timm."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Dict, List

from torch import nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: makes ``factory`` available to :func:`create_model` under its own name."""
    if factory.__name__ in _MODELS:
        raise ValueError(f"model '{factory.__name__}' is registered twice")
    _MODELS[factory.__name__] = factory
    return factory


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model '{name}'{hint}; available: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds the registered model ``name``; keyword arguments go to its factory."""
    return model_entrypoint(name)(**kwargs)
