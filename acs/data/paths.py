"""Where datasets live on disk."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

#: Environment variable that moves the data folder without touching configs (e.g. a shared cluster disk).
ENV_VAR = "ACS_DATA"
DEFAULT_ROOT = "./data"


def resolve_root(root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """``root`` if given, else ``$ACS_DATA``, else ``./data``; ``~`` and variables are expanded.

    An explicit root wins over the environment so that a config value is never silently overridden.
    """
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(os.path.expandvars(os.path.expanduser(str(root))))
