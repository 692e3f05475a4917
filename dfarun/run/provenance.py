"""A run record's contents: one seed's numbers and where they came from (code, machine, command).

runner.py writes one per seed the moment it is final (store.write); records.py reads them back
for the tables and figures.
"""
from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dfarun.run import store
from dfarun.config.schema import effective_lr
from dfarun.engine.train import SeedResult


def context(cfg: DictConfig, device: torch.device, stacked: int, row: str) -> dict:
    """What every seed's record of a job shares: the experiment, its key and row, and where it ran."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["lr"] = effective_lr(cfg)
    return {
        "format": store.FORMAT,
        "key": store.experiment_key(cfg),
        "row": row,
        "config": config,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "stacked_seeds": stacked,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),     # uncommitted changes: git_commit alone does not say what ran
        "host": platform.node(),
        "overrides": _overrides(),     # the command line's overrides, as typed (None: called from Python)
    }


def record(context: dict, result: SeedResult, wall_seconds: float) -> dict:
    """One seed's run record: the job's context, its stop reason, final errors and history."""
    last = result.history[-1]
    diverged = result.stop == "diverged"
    best = {}
    if "val_error" in last and not diverged:  # training time chosen on the validation set
        best = {"best_val": min(result.history, key=lambda row: (row["val_error"], row["epoch"]))}
    return {
        **context,
        "seed": result.seed,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "stop": result.stop,
        "epochs": last["epoch"],
        "train_error": None if diverged else last["train_error"],
        "test_error": None if diverged else last["test_error"],
        "wall_seconds": wall_seconds,
        **best,
        "history": result.history,
    }


def _git(*args: str) -> str | None:
    """git's output in the folder dfarun's code lies in; None outside a checkout (a wheel)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def _git_dirty() -> bool | None:
    """Uncommitted changes to tracked files (run records and other untracked files aside)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def _overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
