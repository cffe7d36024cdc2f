"""One writer per run directory.

Two ``t2i fit`` on the same run directory (the same stage config and ``save_dir``) used to race: the
second swept the first's temporary checkpoint files and the first died with ``[Errno 2]``. A fit now
holds an exclusive lock on ``<run>/.fit.lock`` (``fcntl.flock``, released by the system when the
process ends, however it ends) from before training until it exits; a second fit on the directory is
refused naming the first's pid. Holding the lock, the fit also removes the temporary files that a
kill during an earlier save left in its checkpoint directory (they are never complete checkpoints).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..data.shards import remove_stale_temporaries

LOCK_NAME = ".fit.lock"
_held: dict[Path, IO[str]] = {}  # kept open for the life of the process: closing would release the lock


class RunBusyError(FileExistsError):
    """Another process is training into the same run directory."""


def lock_run(run_dir: str | os.PathLike, checkpoints: str | os.PathLike) -> int:
    """Take the run directory's lock (or raise :class:`RunBusyError`) and remove stale temporary files
    from ``checkpoints``; how many were removed."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    if path not in _held:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunBusyError(
                f"{run_dir} is being trained into by another t2i fit (pid {holder}): wait for it to end, or give "
                "this run another directory (--trainer.logger.init_args.save_dir)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held[path] = handle
    return remove_stale_temporaries(checkpoints) if Path(checkpoints).is_dir() else 0


def release_run_locks() -> None:
    """Release the locks this process holds (when a fit run in-process ends; a process's exit does it too)."""
    while _held:
        _, handle = _held.popitem()
        handle.close()
