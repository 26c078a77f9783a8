"""Where a run came from: the commit of the code, the versions of the packages that shaped it, the
machine and the device. Run summaries (``summary.json``, ``eval.json``) and the W&B config carry it.

Nothing here may stop a run: what cannot be found out (no git, a copy of the code outside a checkout,
a package not installed) is None.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

PACKAGES = ("torch", "torchvision", "hydra-core", "wandb")
# The acs package's own folder: the checkout that holds it is the code that ran, wherever the run's
# working directory is.
SOURCE = Path(__file__).resolve().parent


def collect(device: Any, source: Optional[Path] = None) -> Dict[str, Any]:
    """The provenance of a run on ``device`` (a torch.device) with the code in ``source`` (acs's own)."""
    return {
        **git_state(source or SOURCE),
        "versions": {"python": platform.python_version(), **{name: package_version(name) for name in PACKAGES}},
        "host": socket.gethostname() or None,
        "device_name": device_name(device),
    }


def git_state(folder: Path) -> Dict[str, Any]:
    """``git_commit`` (HEAD's hash) and ``git_dirty`` (tracked files differ from it) of the checkout
    holding ``folder``; both None when ``folder`` is no tracked part of one or git is missing."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        # A package copied into an ignored folder of some other repository (a virtual environment
        # inside a project) is not that repository's code.
        _git(folder, "ls-files", "--error-unmatch", "--", "__init__.py")
        dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def _git(folder: Path, *args: str) -> str:
    command = ["git", "-C", str(folder), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True, stdin=subprocess.DEVNULL)
    return done.stdout.strip()


def package_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: Any) -> Optional[str]:
    """The CUDA device's name, or the CPU model."""
    if getattr(device, "type", None) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as info:  # Linux: the marketing name, which platform does not give
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None
