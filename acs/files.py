"""Files that must never be seen half-written (checkpoints, run summaries, reports), shared by
training and reporting. Under torchrun only rank 0 writes: every rank holds the same state."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import IO, Any, Callable, Iterable, List, Mapping, Optional, Union

# The temporary file of an atomic write of NAME: ".NAME.<12 hex digits>.tmp" beside it.
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


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
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # the pattern _TEMP recognises
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


def remove_temp_files(folder: Union[str, Path]) -> List[Path]:
    """Removes the temporary files that atomic writes killed midway left in ``folder`` (not below
    it); returns them. Only safe while no other process writes there: call it holding the folder's lock."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if _TEMP.match(p.name) and p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def lock_file(path: Union[str, Path], create: bool = True) -> Optional[int]:
    """An exclusive ``flock`` on ``path``: the open descriptor that holds it, or None while another
    process holds it. The kernel drops the lock when the descriptor is closed or its process dies,
    however it dies, so the lock of a killed process never needs cleaning up. Without ``create``, a
    missing file is FileNotFoundError. :func:`unlock` releases it."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    handle = os.open(path, flags, 0o666)  # under the umask, like every file of the run folder
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    _LOCKS.add(handle)
    return handle


def unlock(handle: int) -> None:
    _LOCKS.discard(handle)
    os.close(handle)


# A forked child (a DataLoader worker) shares the parent's locked descriptors, and a flock lasts
# until every copy is closed: a worker outliving its run would keep the folder locked. The child
# closes its copies, which leaves the parent's lock as it is.
_LOCKS: set = set()


def _forget_locks() -> None:
    for handle in _LOCKS:
        os.close(handle)
    _LOCKS.clear()


os.register_at_fork(after_in_child=_forget_locks)
