"""Worker processes that neither die before their main process on SIGTERM nor outlive it.

A scheduler (SLURM, ``docker stop``) signals a job's whole process group. A DataLoader worker dying
of that SIGTERM made the main process raise "DataLoader worker ... is killed by signal" before it could
save (no checkpoint, a traceback). Workers now ignore SIGTERM; the main process saves ``last.ckpt``
(:class:`~t2i_lightning.training.preemption.PreemptionCheckpoint`) and stops them itself (and torch's
worker watchdog ends a worker whose main process has gone).

A main process that stops on an error raised while a batch was fetched leaves its loader's workers
alive (the traceback holds the loader), and at exit multiprocessing sends them SIGTERM and joins them:
ignored, that SIGTERM made the exit wait forever. So the main process kills its remaining daemonic
children (the workers) with SIGKILL first, at exit.

A main process killed outright (SIGKILL, the OOM killer) runs no exit handler: its process-pool
workers (``t2i data``) then finished their shard and waited on their job queue forever, ~300-600 MB
each. Every worker therefore watches its parent (:func:`exit_with_parent`) and exits when it is gone;
a shard it was writing stays a temporary file, swept by the next run.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import threading
import time

PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Start a daemon thread that ends this process (exit status 1) once ``parent_pid`` is no longer its
    parent, i.e. the parent died and this process was re-parented; a process pool's ``initializer``.
    Called in ``parent_pid`` itself (a pool of threads stands in for processes), it does nothing."""
    if parent_pid == os.getpid():
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def detach_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: ignore SIGTERM (the main process ends the workers), and exit when
    the main process is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_parent(os.getppid())


def kill_workers_left_at_exit() -> None:
    """SIGKILL the daemonic children still alive (DataLoader workers, which ignore SIGTERM) and reap them,
    before multiprocessing's own exit handler would SIGTERM and join them forever. torch's SIGCHLD handler
    (which raises when a worker dies) is put back to the default first: it would interrupt the reaping
    after the first worker and leave the others to that endless join."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=10)


atexit.register(kill_workers_left_at_exit)  # after multiprocessing's exit handler, so it runs before it
