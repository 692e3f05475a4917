"""Locks: which job trains what, when many jobs share one store.

Many jobs may share one store: a sweep's parallel jobs, two sweeps of overlapping grids, a rerun
started while the first run still lives. Two rules keep them from colliding:
  - a job trains a seed only while it holds the (experiment, seed) lock, and only the holder
    writes that seed's record, so no seed is trained twice at once and no record twice;
  - a job writes its checkpoint only while it holds its job lock (experiment + seed list, the
    checkpoint's name), so two identical jobs never write or drop each other's checkpoint.
They are flock(2) locks on empty files under <store>/locks/. The kernel releases them when the
process dies, SIGKILL included, so a lock is never stale; a file left by a killed job is
harmless and goes when the next job takes and releases that lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Lock:
    """An flock held on `path`. release() removes the file, then drops the lock."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        # unlink while still holding: a job that opened the file meanwhile sees that it was
        # removed once it gets the lock (acquire's check) and starts again on a fresh file
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = -1


def acquire(path: Path, wait: bool) -> Lock | None:
    """The lock on `path`; None when another process holds it and wait is False."""
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # the previous holder may have removed the file before we got the lock: ours would then
        # be on a file no other job can find, so start again on whatever the path holds now
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return Lock(path, fd)
        except FileNotFoundError:
            pass
        os.close(fd)


def drop_stale_locks(paths: list[Path]) -> None:
    """Remove the lock files among `paths` that no live process holds."""
    for path in paths:
        if path.exists() and (lock := acquire(path, wait=False)) is not None:
            lock.release()


def _open(path: Path) -> int:
    """Open (or make) the lock file. The folder is made once and never removed by any job, so it
    is still there when the file is opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
