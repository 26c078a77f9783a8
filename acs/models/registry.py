"""Model registry: factory functions register themselves by name, as in timm."""
from __future__ import annotations

from typing import Any, Callable, List

from torch import nn

from acs.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: makes ``factory`` available to :func:`create_model` under its own name."""
    return MODELS.register()(factory)


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return MODELS.names(pattern)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds the registered model ``name``; keyword arguments go to its factory, and one it does
    not take is a ValueError naming the factory's options."""
    MODELS.check_options(name, kwargs)
    return MODELS.get(name)(**kwargs)
