"""Run records: one JSON file per (experiment, seed), written atomically.

The experiment is the part of the config that changes the numbers (data set, model, method,
learning rate, batch size, epoch budget); where the data live, which device ran it and
which other seeds shared the job do not. A record's file name carries a short hash of that
part, so a rerun of the same experiment finds its finished seeds and skips them.
"""
from __future__ import annotations

import contextlib
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
                "table", "figure")


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


def save_weights(path: Path, net) -> None:
    """One seed's final network (save_weights=true), for analyses such as Figure 3."""
    _atomic(path, lambda f: torch.save({"weights": [w[0] for w in net.weights],
                                        "biases": [b[0] for b in net.biases],
                                        "activation": net.activation}, f), binary=True)


def drop_checkpoint(path: Path) -> None:
    """The job is done: remove its checkpoint (and the folder, once empty)."""
    path.unlink(missing_ok=True)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):  # left by a job killed mid-write
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def records(root: Path) -> Iterator[tuple[Path, dict | None]]:
    """Every *.json in root with its record (None where it is not a finished record of ours)."""
    for path in sorted(Path(root).glob("*.json")):
        yield path, read(path)


def read(path: Path) -> dict | None:
    """The record at path, or None when it is missing or not a finished record of ours."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None


def write(path: Path, record: dict) -> None:
    _atomic(path, lambda f: json.dump(_finite(record), f, indent=1, allow_nan=False))


def _atomic(path: Path, dump, binary: bool = False) -> None:
    """Temp file in the same directory, fsync, rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def _finite(obj):
    """JSON has no NaN/inf: a diverged seed's numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
