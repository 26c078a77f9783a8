"""ACS: Adaptive Channel Skipping with gate networks (ACS-GN) and dynamic grouping convolution (ACS-DG)."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["AcsModel", "Output", "create_model", "list_models", "register_model"]


def __getattr__(name: str) -> Any:
    # The model API loads on first use: `import acs` (run.py's config schema, `--help`, TAB completion)
    # then costs no torch import.
    if name in __all__:
        return getattr(importlib.import_module("acs.models"), name)
    raise AttributeError(f"module 'acs' has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *__all__])
