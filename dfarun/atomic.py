"""Whole files or none: every file dfarun writes (records, checkpoints, weights, the ZCA cache,
tables, figures) goes to a temp file in its folder, is fsynced, then renamed over the target,
so a reader, or a job killed half-way, never sees part of one."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def write(path: Path, dump: Callable[[IO], object], binary: bool = False, mode: int = 0o644) -> None:
    """dump(f) into a temp file beside `path`, then rename it to `path` (with `mode`)."""
    if path.is_dir():  # the rename would fail naming the temp file; name the path in the way
        raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
    # the folder first; no job ever removes a folder of the store (checkpoints/, locks/ stay,
    # empty), so it is still there for the temp file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            dump(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write(path, lambda f: f.write(text))


def write_bytes(path: Path, data: bytes) -> None:
    write(path, lambda f: f.write(data), binary=True)


def temps(path: Path) -> list[Path]:
    """The temp files that writes of `path` killed half-way left behind."""
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def atomic_save(path: Path, obj) -> None:
    """torch.save that readers see whole or not at all (checkpoints, the ZCA cache)."""
    import torch  # here: the report layer writes its files with `write` and never imports torch

    write(path, lambda f: torch.save(obj, f), binary=True)
