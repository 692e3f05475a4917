"""Run records: one JSON file per (experiment, seed), written atomically; and the locks that
let many jobs share one store.

The experiment is the part of the config that changes the numbers (data set, model, method,
learning rate, batch size, epoch budget); where the data live, which device ran it and
which other seeds shared the job do not. A record's file name carries a short hash of that
part, so a rerun of the same experiment finds its finished seeds and skips them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from .config import Config, effective_lr

log = logging.getLogger("dfarun")

FORMAT = 2  # bump when the record layout changes (2: row label, best_val)
# not part of the experiment: where and how it ran, and how it was grouped
RUNTIME_KEYS = ("seeds", "device", "data_dir", "store", "force", "compile", "save_weights", "profile",
                "table", "figure", "logger")


# --- names ------------------------------------------------------------------------------------

def experiment(cfg: DictConfig) -> dict:
    exp = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS:
        exp.pop(key, None)
    exp["lr"] = effective_lr(cfg)
    return exp


def experiment_key(cfg: DictConfig) -> str:
    """Hash of the experiment's settings that differ from the schema's defaults, so that a
    new setting whose default keeps the old behaviour leaves existing records findable.
    (Changing a default's value therefore changes what old records mean: bump FORMAT.)"""
    defaults = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    blob = json.dumps(_differences(experiment(cfg), defaults), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _differences(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        default = defaults.get(key, _ABSENT)
        if isinstance(value, dict) and isinstance(default, dict):
            out[key] = _differences(value, default)
        elif value != default:
            out[key] = value
    return out


_ABSENT = object()


def record_path(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.store).expanduser() / f"{_stem(cfg)}_seed{seed}.json"


def _stem(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}_{cfg.model.name}_{cfg.method.name}_{experiment_key(cfg)}"


def checkpoint_path(cfg: DictConfig) -> Path:
    """One checkpoint per job: the experiment and the job's seed list."""
    seeds = hashlib.sha1(json.dumps(sorted(cfg.seeds)).encode()).hexdigest()[:8]
    return Path(cfg.store).expanduser() / "checkpoints" / f"{_stem(cfg)}_seeds-{seeds}.pt"


# --- checkpoints and weights -----------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    atomic_save(path, state)


def atomic_save(path: Path, obj) -> None:
    """torch.save that readers see whole or not at all (checkpoints, the ZCA cache)."""
    _atomic(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at path, or None when there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign: start afresh rather than fail
        log.warning(f"ignoring unreadable checkpoint {path}: {type(err).__name__}")
        return None


def checkpoint_seeds(path: Path) -> list[int]:
    """The seeds the checkpoint at path holds; [] when there is none or it cannot be read
    (quietly: the run that reads it says why)."""
    if not path.exists():
        return []
    try:
        return list(torch.load(path, map_location="cpu", weights_only=True)["seeds"])
    except Exception:
        return []


def save_weights(path: Path, net) -> None:
    """One seed's final network (save_weights=true), for analyses such as Figure 3; a conv
    net's also carries its shape (`arch`)."""
    saved = net.to_dict() | {"weights": [w[0] for w in net.weights], "biases": [b[0] for b in net.biases]}
    _atomic(path, lambda f: torch.save(saved, f), binary=True)


def drop_checkpoint(path: Path) -> None:
    """The job is done: remove its checkpoint (and the folder, once empty). Only the holder of
    the job's lock calls this, so no live job is writing the temp files it removes."""
    path.unlink(missing_ok=True)
    drop_temps(path)
    with contextlib.suppress(OSError):  # another job's checkpoint may still be there
        path.parent.rmdir()


def drop_temps(path: Path) -> None:
    """Remove the temp files a job killed while writing `path` left behind."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


# --- records -------------------------------------------------------------------------------------

def records(root: Path) -> Iterator[tuple[Path, dict | None]]:
    """Every *.json in root with its record (None where it is not a finished record of ours)."""
    for path in sorted(Path(root).glob("*.json")):
        yield path, read(path)


def read(path: Path) -> dict | None:
    """The record at path, or None when it is missing or not a finished record of ours."""
    try:
        return load(path)
    except ValueError:
        return None


def load(path: Path) -> dict:
    """The record at path; ValueError saying why when it is not a finished record of ours."""
    try:
        rec = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"unreadable ({err.strerror or type(err).__name__})") from None
    except ValueError as err:  # truncated, empty, not UTF-8
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not a record")
    if rec.get("format") != FORMAT:
        raise ValueError(f"format {rec.get('format')!r}; this version reads format {FORMAT}")
    return rec


def write(path: Path, record: dict) -> None:
    _atomic(path, lambda f: json.dump(_finite(record), f, indent=1, allow_nan=False))


def _atomic(path: Path, dump, binary: bool = False) -> None:
    """Temp file in the same directory, fsync, rename: readers see all of it or nothing."""
    fd, tmp = _in_folder(path, lambda: tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            dump(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _in_folder(path: Path, create):
    """create() a file in path's folder, making the folder first. Another job that just emptied
    the folder (checkpoints/, locks/) may remove it between the two steps: then again."""
    for _ in range(100):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return create()
        except FileNotFoundError:
            continue
    return create()


def _finite(obj):
    """JSON has no NaN/inf: a diverged seed's numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# --- locks: which job trains what ------------------------------------------------------------
# Many jobs may share one store: a sweep's parallel jobs, two sweeps of overlapping grids, a rerun
# started while the first run still lives. Two rules keep them from colliding:
#   - a job trains a seed only while it holds the (experiment, seed) lock, and only the holder
#     writes that seed's record, so no seed is trained twice at once and no record twice;
#   - a job writes its checkpoint only while it holds its job lock (experiment + seed list, the
#     checkpoint's name), so two identical jobs never write or drop each other's checkpoint.
# They are flock(2) locks on empty files under <store>/locks/. The kernel releases them when the
# process dies, SIGKILL included, so a lock is never stale; a file left by a killed job is
# harmless and goes when the next job takes and releases that lock.


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
        with contextlib.suppress(OSError):  # other jobs' locks may still be there
            self.path.parent.rmdir()


def acquire(path: Path, wait: bool) -> Lock | None:
    """The lock on `path`; None when another process holds it and wait is False."""
    while True:
        fd = _in_folder(path, lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
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


def seed_lock(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.store).expanduser() / "locks" / f"{_stem(cfg)}_seed{seed}.lock"


def job_lock(cfg: DictConfig) -> Path:
    return Path(cfg.store).expanduser() / "locks" / f"{checkpoint_path(cfg).stem}.lock"
