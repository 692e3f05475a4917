"""Run records: one JSON file per (experiment, seed), written atomically; checkpoints; and
the names of the locks (locks.py) that let many jobs share one store.

The experiment is the part of the config that changes the numbers (data set, model, method,
learning rate, batch size, epoch budget); where the data live, which device ran it and
which other seeds shared the job do not. A record's file name carries a short hash of that
part, so a rerun of the same experiment finds its finished seeds and skips them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dfarun import atomic
from dfarun.atomic import atomic_save
from dfarun.errors import interrupted
# the record format is run/record.py's (its version, reading a file); what a key hashes, experiment.py's
from dfarun.run.experiment import RUNTIME_KEYS, experiment, settings  # noqa: F401
from dfarun.run.record import FORMAT, STOPS, load, parse  # noqa: F401
from dfarun.run.locks import Lock, acquire, drop_stale_locks  # noqa: F401 (the runner takes its locks here)

log = logging.getLogger("dfarun")

# --- names ------------------------------------------------------------------------------------

def experiment_key(cfg: DictConfig) -> str:
    """Hash of settings(experiment(cfg))."""
    blob = json.dumps(settings(experiment(cfg)), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def record_path(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.store).expanduser() / f"{_stem(cfg)}_seed{seed}.json"


def _stem(cfg: DictConfig) -> str:
    return f"{cfg.dataset.name}_{cfg.model.name}_{cfg.method.name}_{experiment_key(cfg)}"


def checkpoint_path(cfg: DictConfig) -> Path:
    """One checkpoint per job: the experiment and the job's seed list."""
    seeds = hashlib.sha1(json.dumps(sorted(cfg.seeds)).encode()).hexdigest()[:8]
    return Path(cfg.store).expanduser() / "checkpoints" / f"{_stem(cfg)}_seeds-{seeds}.pt"


def other_checkpoints(cfg: DictConfig) -> list[Path]:
    """Checkpoints of this experiment left by jobs with another seed list (not this job's)."""
    own = checkpoint_path(cfg)
    return sorted(p for p in own.parent.glob(f"{_stem(cfg)}_seeds-*.pt") if p != own)


# --- checkpoints and weights -----------------------------------------------------------------

# A force=true job notes when it began (time.time_ns()) beside its checkpoint, in
# `<checkpoint>.forced`, until all its seeds are done, and in each checkpoint it writes. The
# same command, rerun after a stop, takes that time: it keeps the records the job wrote since
# and resumes only a checkpoint of that same job, never one of a run from before the force.
FORCED = "forced"


def force_began(cfg: DictConfig) -> int:
    """When this force=true job began: the note a stopped run of it left, else now."""
    try:
        return int(_force_note(cfg).read_text())
    except (OSError, ValueError):  # none (or not ours): a new forced job begins now
        return time.time_ns()


def note_force(cfg: DictConfig, began: int) -> None:
    """Note `began` for a rerun, once the job is sure to train (its inputs checked)."""
    if not _force_note(cfg).exists():
        atomic.write_text(_force_note(cfg), str(began))


def drop_force_note(cfg: DictConfig) -> None:
    _force_note(cfg).unlink(missing_ok=True)


def _force_note(cfg: DictConfig) -> Path:
    return checkpoint_path(cfg).with_suffix(".forced")


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_save(path, state)


def load_checkpoint(path: Path, forced: int | None = None, quiet: bool = False) -> dict | None:
    """The checkpoint at path, or None when there is none, it cannot be read (said unless
    `quiet`), or `forced` (force_began) and another job than that forced one wrote it."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign: start afresh rather than fail
        if interrupted(err):  # Ctrl-C inside torch's C++ reader: the file is fine, the user wants out
            raise
        if not quiet:
            log.warning(f"ignoring unreadable checkpoint {path}: {type(err).__name__}")
        return None
    return None if forced is not None and not (isinstance(saved, dict) and saved.get(FORCED) == forced) else saved


def checkpoint_seeds(path: Path, forced: int | None = None) -> list[int]:
    """The seeds the checkpoint at path holds (load_checkpoint's rules, quietly: the run that
    reads it says why it cannot)."""
    try:
        return list(load_checkpoint(path, forced, quiet=True)["seeds"])
    except Exception as err:  # None, or not a dict of ours
        if interrupted(err):
            raise
        return []


def save_weights(path: Path, net) -> None:
    """One seed's final network (save_weights=true), for analyses such as Figure 3; a conv
    net's also carries its shape (`arch`)."""
    saved = net.to_dict() | {"weights": [w[0] for w in net.weights], "biases": [b[0] for b in net.biases]}
    atomic.write(path, lambda f: torch.save(saved, f), binary=True)


def drop_checkpoint(path: Path) -> None:
    """The job is done: remove its checkpoint. Only the holder of the job's lock calls this, so
    no live job is writing the temp files it removes. The folder stays (see atomic.write)."""
    path.unlink(missing_ok=True)
    drop_temps(path)


def drop_temps(path: Path) -> None:
    """Remove the temp files a job killed while writing `path` left behind."""
    for tmp in atomic.temps(path):
        tmp.unlink(missing_ok=True)


# --- records -------------------------------------------------------------------------------------

def read(path: Path) -> dict | None:
    """The record at path, or None when it is missing or not a finished record of ours."""
    try:
        return load(path)
    except ValueError:
        return None


_warned: set[tuple[Path, float]] = set()


def finished(path: Path) -> dict | None:
    """The runner's "is this seed done?": the record at path when it is a whole record of this
    version for this file's experiment and seed; None otherwise. A file that is there but is not
    such a record is named once (the seed is trained again, and its record replaces the file)."""
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    try:
        rec = load(path)
        _complete(rec, path)
    except ValueError as err:
        if (path, stamp) not in _warned:
            _warned.add((path, stamp))
            log.warning(f"ignoring {path}: {err}; its seed is trained again")
        return None
    return rec


def _complete(rec: dict, path: Path) -> None:
    """ValueError naming the first field that is missing or wrong: the checks dfarun-tables and
    dfarun-figures apply (record.parse), and the file name must be this record's own."""
    parse(rec, path)
    if not path.stem.endswith(f"_{rec['key']}_seed{rec['seed']}"):
        raise ValueError(f"seed/key: {rec['key']} seed {rec['seed']} is not the record {path.name} names")


def write(path: Path, record: dict) -> None:
    atomic.write(path, lambda f: json.dump(_finite(record), f, indent=1, allow_nan=False))


def write_diff(path: Path, diff: str | None) -> None:
    """The uncommitted changes to the code that made a record, beside it (`<record>.diff`); with
    none, a diff an earlier run of the seed left there goes."""
    if diff:
        atomic.write_text(path, diff)
    else:
        path.unlink(missing_ok=True)


# --- live histories (progress.Reporter writes them; tables and figures never read them) ----------

def live_path(cfg: DictConfig, seed: int) -> Path:
    """<store>/live/<record name>.jsonl: the seed's history rows, one JSON line per epoch."""
    record = record_path(cfg, seed)
    return record.parent / "live" / f"{record.stem}.jsonl"


def tensorboard_dir(cfg: DictConfig, seed: int) -> Path:
    record = record_path(cfg, seed)
    return record.parent / "tensorboard" / record.stem


def json_line(row: dict) -> str:
    """One history row as the record holds it (NaN/inf as null), on one line."""
    return json.dumps(_finite(row), allow_nan=False) + "\n"


def write_lines(path: Path, rows: list[dict]) -> None:
    atomic.write_text(path, "".join(json_line(row) for row in rows))


def _finite(obj):
    """JSON has no NaN/inf: a diverged seed's numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# --- locks: which job trains what (the protocol is in locks.py) -----------------------------------

def seed_lock(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.store).expanduser() / "locks" / f"{_stem(cfg)}_seed{seed}.lock"


def job_lock(cfg: DictConfig) -> Path:
    return Path(cfg.store).expanduser() / "locks" / f"{checkpoint_path(cfg).stem}.lock"
