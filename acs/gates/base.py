"""The gate interface and registry: a gate maps a layer's input to an N × k binary keep-mask."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Type, Union

from torch import Tensor, nn

from acs.cost import MacMeter

GateSpec = Union[None, str, Mapping[str, Any]]
_GATES: Dict[str, Optional[Type["Gate"]]] = {"none": None}


class Gate(nn.Module):
    """Reads the layer input (N × C_in × H × W), returns a keep-mask over the layer's ``k`` new
    output channels: exactly 0/1 in forward, differentiable (straight-through) in backward."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels

    def macs(self, in_hw: Sequence[int], live_in: Optional[Tensor] = None) -> Tensor:
        """The gate's own per-sample MACs for an input of spatial size ``in_hw`` whose live
        channels are ``live_in`` (N × C_in, ``None`` = all)."""
        raise NotImplementedError


def register_gate(name: str) -> Callable[[Type[Gate]], Type[Gate]]:
    def decorator(cls: Type[Gate]) -> Type[Gate]:
        if name in _GATES:
            raise ValueError(f"gate '{name}' is registered twice")
        _GATES[name] = cls
        return cls

    return decorator


def list_gates() -> list:
    return sorted(_GATES)


def create_gate(spec: GateSpec, in_channels: int, out_channels: int) -> Optional[Gate]:
    """Builds a gate from a name (``"acs"``) or a mapping (``{"name": "acs", "width": 16}``).

    ``"none"`` (or ``None``) means an ungated layer and returns ``None``.
    """
    if spec is None:
        return None
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in _GATES:
        close = difflib.get_close_matches(str(name), _GATES, n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown gate '{name}'{hint}; available: {', '.join(list_gates())}")
    cls = _GATES[name]
    if cls is None:
        return None
    return cls(in_channels, out_channels, **options)


def run_gate(gate: Optional[Gate], x: Tensor, meter: MacMeter, live_in: Optional[Tensor]) -> Optional[Tensor]:
    """The keep-mask for ``x`` with the gate's cost recorded; ``None`` when ungated or when the
    meter measures the reference (gate-free) cost."""
    if gate is None or meter.dense:
        return None
    meter.add(gate.macs(x.shape[-2:], live_in))
    return gate(x)
