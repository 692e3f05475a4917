"""Run records: one JSON file per (experiment, seed), written atomically.

The experiment is the part of the config that changes the numbers (data set, model, method,
learning rate, batch size, epoch budget); where the data live, which device ran it and
which other seeds shared the job do not. A record's file name carries a short hash of that
part, so a rerun of the same experiment finds its finished seeds and skips them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import effective_lr

FORMAT = 1  # bump when the record layout changes
RUNTIME_KEYS = ("seeds", "device", "data_dir", "store", "force")  # not part of the experiment


def experiment(cfg: DictConfig) -> dict:
    exp = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS:
        exp.pop(key, None)
    exp["lr"] = effective_lr(cfg)
    return exp


def experiment_key(cfg: DictConfig) -> str:
    blob = json.dumps(experiment(cfg), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def record_path(cfg: DictConfig, seed: int) -> Path:
    name = f"{cfg.dataset.name}_{cfg.model.name}_{cfg.method.name}_{experiment_key(cfg)}_seed{seed}.json"
    return Path(cfg.store).expanduser() / name


def read(path: Path) -> dict | None:
    """The record at path, or None when it is missing or not a finished record of ours."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None


def write(path: Path, record: dict) -> None:
    """Temp file in the same directory, fsync, rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(record), f, indent=1, allow_nan=False)
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
