"""One writer per output directory: a ``t2i fit`` run directory, an extraction's embedding directory.

Two processes writing into one directory used to race: the second swept the first's temporary files
(``.*.tmp``, the atomic writes in progress) and the first died with ``[Errno 2]``. A writer now holds an
exclusive lock on ``<directory>/.writer.lock`` (``fcntl.flock``) from before it writes until it ends; a
second writer is refused at once, naming the first (what it is, its pid and host, recorded in the file).

There is no stale lock to break by hand: the system drops the lock with the process that held it, however
it ended (a SIGKILL leaves the file, and the next writer takes it over). A writer that ends normally
removes the file, and one that takes the lock checks that it locked the file still at the path (not one
the previous holder removed meanwhile).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

LOCK_NAME = ".writer.lock"
_held: dict[Path, IO[str]] = {}  # kept open for the life of the lock: closing the file releases it


class DirectoryBusyError(FileExistsError):
    """Another process is writing into the same directory."""


def lock_directory(directory: str | os.PathLike, writer: str, advice: str) -> None:
    """Take ``directory``'s lock for this process (again: nothing to do) or raise :class:`DirectoryBusyError`.

    ``writer`` says what this process is (``t2i fit``), for the message a refused one prints; ``advice``
    ends that message: what else the refused one can do than wait."""
    directory = Path(directory)
    path = directory / LOCK_NAME
    if path in _held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryBusyError(
                f"{directory} is being written by {holder}: wait for it to end, or {advice}"
            ) from None
        if _is_at(handle, path):
            break
        handle.close()  # the holder removed this file as it ended: lock the one now at the path
    handle.seek(0)
    handle.truncate()
    handle.write(f"{writer} (pid {os.getpid()} on {socket.gethostname()})\n")
    handle.flush()
    _held[path] = handle


def _is_at(handle: IO[str], path: Path) -> bool:
    """Whether the open file ``handle`` is the file at ``path`` now."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(handle.fileno())
    return (own.st_dev, own.st_ino) == (found.st_dev, found.st_ino)


def release_directory(directory: str | os.PathLike) -> None:
    """Remove ``directory``'s lock file and release the lock, if this process holds it."""
    path = Path(directory) / LOCK_NAME
    handle = _held.pop(path, None)
    if handle is not None:
        path.unlink(missing_ok=True)  # while locked: one that opened it meanwhile finds it gone
        handle.close()


def release_directory_locks() -> None:
    """Release every lock this process holds (when a command run in-process ends)."""
    for path in list(_held):
        release_directory(path.parent)
