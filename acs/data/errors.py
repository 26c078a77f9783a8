"""The errors a caller sees when a dataset's files are missing, damaged or cannot be fetched."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional

from acs.messages import one_line


class DatasetNotFoundError(RuntimeError):
    """A dataset's files are missing, corrupted, or could not be downloaded.

    Subclasses RuntimeError so that code written against torchvision (which raises a bare
    RuntimeError here) keeps working, while callers that care can catch exactly this.
    """

    def __init__(self, dataset: str, folder: Path, expected: List[str], reason: str, hint: str):
        self.dataset = dataset
        self.folder = Path(folder)
        self.expected = list(expected)
        super().__init__(f"dataset '{dataset}' {reason} in {self.folder}: expected {format_files(expected)}. {hint}")


class DataFileError(RuntimeError):
    """A file of a dataset that is on disk but cannot be read (a damaged image of an image folder),
    found when a batch is loaded; the message is one line naming the file."""

    def __init__(self, message: str):
        # Raised in a DataLoader worker, the error is rebuilt in the main process from one string, the
        # worker's whole traceback, whose last line holds the original message: keep that line only.
        lines = message.strip().splitlines()
        if len(lines) > 1:
            message = lines[-1].partition(f"{type(self).__name__}: ")[2] or message
        super().__init__(message)


def format_files(files: Iterable[str]) -> str:
    """``a/x, a/y, b`` -> ``a/{x, y}, b``: keeps long file lists of one folder readable on one line."""
    groups: dict = {}
    for f in files:
        folder, _, name = f.rpartition("/")
        groups.setdefault(folder, []).append(name)
    parts = []
    for folder, names in groups.items():
        if not folder:
            parts.extend(names)
        elif len(names) == 1:
            parts.append(f"{folder}/{names[0]}")
        else:
            parts.append(f"{folder}/{{{', '.join(names)}}}")
    return ", ".join(parts)


DOWNLOAD_HINT = (
    "To get it, run once with dataset.download=true (download=True) on a machine with internet access, "
    "or copy the files into that folder; set ACS_DATA or dataset.root to point elsewhere."
)


def missing_files(folder: Path, expected: Iterable[str]) -> List[str]:
    """The entries of ``expected`` (paths relative to ``folder``) that do not exist."""
    return [name for name in expected if not os.path.exists(os.path.join(folder, name))]


def not_found(
    dataset: str, folder: Path, expected: List[str], download: bool, cause: Optional[BaseException] = None
) -> DatasetNotFoundError:
    """Builds the error for a failed torchvision load, telling apart the ways it fails."""
    missing = missing_files(folder, expected)
    if download and (missing or isinstance(cause, OSError)):
        # Fetching failed (offline, server gone, bad md5 after download): a failed download is an
        # OSError (URLError); torchvision re-downloads present files whose md5 is wrong.
        reason = f"could not be downloaded ({one_line(cause)})" if cause else "could not be downloaded"
        hint = "Check the internet connection, or copy the files into that folder and set download=false."
    elif len(missing) == len(expected):
        reason, hint = "not found", DOWNLOAD_HINT
    elif missing:
        reason, hint = f"is incomplete (missing {format_files(missing)})", DOWNLOAD_HINT
    else:
        # All files are present, so torchvision's md5 check or its parser rejected one of them.
        detail = f": {one_line(cause)}" if cause else ""
        reason = f"is corrupted (all files present, but torchvision could not read them{detail})"
        hint = "Delete the files and download them again with dataset.download=true."
    return DatasetNotFoundError(dataset, folder, expected, reason, hint)
