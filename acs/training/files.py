"""Run-folder files that must never be seen half-written, and that only rank 0 writes (torchrun)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Union

from acs.training import distributed


def atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], None]) -> None:
    """Calls ``write`` on a temporary file beside ``path``, syncs it, then renames it over ``path``:
    a crash at any moment leaves the old file or the new one, never a mixture. Under torchrun only
    rank 0 writes (every rank holds the same state); on the other ranks this does nothing."""
    if not distributed.is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Union[str, Path], data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))


def read_jsonl(path: Union[str, Path]) -> list:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rewrite_jsonl(path: Union[str, Path], records: Iterable[Mapping[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda file: file.write(text.encode()))


def append_jsonl(path: Union[str, Path], record: Mapping[str, Any]) -> None:
    if not distributed.is_main():
        return
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
