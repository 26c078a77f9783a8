"""Files that must never be seen half-written (checkpoints, run summaries, reports), shared by
training and reporting. Under torchrun only rank 0 writes: every rank holds the same state."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Union


def _writes() -> bool:
    """False on the ranks after the first of a torchrun process group. Looked up without importing
    torch.distributed: a process that never imported it is not one of several ranks."""
    dist = sys.modules.get("torch.distributed")
    return dist is None or not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], None]) -> None:
    """Calls ``write`` on a temporary file beside ``path``, syncs it, then renames it over ``path``:
    a crash at any moment leaves the old file or the new one, never a mixture. The file gets the
    permissions any ``open()`` would give it under the process umask (``tempfile.mkstemp`` would
    make it private, 0600, unreadable by colleagues on a shared file system). On torchrun ranks
    after the first this does nothing."""
    if not _writes():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
    if not _writes():
        return
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
