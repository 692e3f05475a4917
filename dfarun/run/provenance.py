"""A run record's contents: one seed's numbers and where they came from (code, machine, command).

runner.py writes one per seed the moment it is final (store.write); its format is record.py's
Record, through which report/records.py reads them back for the tables and figures.

The code is named by dfarun's version and, in a checkout, its git commit; uncommitted changes
to the code go beside the record as a diff (`<record>.diff`, and git_dirty: true), so every
number can be traced to the code that made it.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dfarun.config.schema import CONF_DIR, effective_lr
from dfarun.engine.train import SeedResult
from dfarun.run import store
from dfarun.run.record import FORMAT, Record

PACKAGE = Path(__file__).resolve().parents[1]  # dfarun/: with CONF_DIR, the code a diff covers (not the records)


@dataclass(frozen=True)
class Code:
    """The code that trains a job."""
    version: str | None  # dfarun's, as installed; None when it is imported uninstalled
    commit: str | None   # None outside a git checkout (a wheel)
    diff: str | None     # uncommitted changes to the code ("": none), for `git apply`; None: no checkout


def code(package: Path = PACKAGE, configs: Path = CONF_DIR) -> Code:
    """dfarun's version, and where `package` (dfarun/) lies in a git checkout, its commit and the
    uncommitted changes to it and to `configs`."""
    try:
        version = importlib.metadata.version("dfarun")
    except importlib.metadata.PackageNotFoundError:
        version = None
    # a wheel installed into a venv inside a checkout lies in its work tree, untracked: no commit of its
    if _git(package, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return Code(version, None, None)
    return Code(version, (_git(package, "rev-parse", "HEAD") or "").strip() or None, _diff(package, configs))


def context(cfg: DictConfig, device: torch.device, stacked: int, row: str, code: Code) -> dict:
    """What every seed's record of a job shares: the experiment, its key and row, and where it ran."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["lr"] = effective_lr(cfg)
    return {
        "format": FORMAT,
        "key": store.experiment_key(cfg),
        "row": row,
        "config": config,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "stacked_seeds": stacked,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dfarun": code.version,
        "git_commit": code.commit,
        # uncommitted changes to the code: git_commit alone does not say what ran; the diff is
        # beside the record (<record>.diff)
        "git_dirty": None if code.diff is None else bool(code.diff),
        "host": platform.node(),
        "overrides": _overrides(),     # the command line's overrides, as typed (None: called from Python)
    }


def record(context: dict, result: SeedResult, wall_seconds: float) -> dict:
    """One seed's run record (record.Record, checked as the readers check it): the job's
    context, its stop reason, final errors and history; as the JSON object store.write writes."""
    last = result.history[-1]
    diverged = result.stop == "diverged"
    best = None
    if "val_error" in last and not diverged:  # training time chosen on the validation set
        best = min(result.history, key=lambda row: (row["val_error"], row["epoch"]))
    return Record.new(
        **context,
        seed=result.seed,
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        stop=result.stop,
        epochs=last["epoch"],
        train_error=None if diverged else last["train_error"],
        test_error=None if diverged else last["test_error"],
        wall_seconds=wall_seconds,
        best_val=best,
        history=result.history,
    ).to_dict()


def _diff(package: Path, configs: Path) -> str | None:
    """The uncommitted changes to `package` and `configs` against HEAD, new files included, with
    paths from the top of the checkout (as `git apply` there takes them); None if git fails."""
    top = (_git(package, "rev-parse", "--show-toplevel") or "").strip()
    if not top:
        return None
    paths = [str(package), str(configs)]
    tracked = _git(top, "diff", "HEAD", "--no-color", "--no-ext-diff", "--", *paths)
    new = _git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", *paths)
    if tracked is None or new is None:
        return None
    # `git diff --no-index` exits 1 when the files differ, as a new file does from /dev/null
    added = [_git(top, "diff", "--no-index", "--no-color", "--no-ext-diff", "--", "/dev/null", name, ok=(1,))
             for name in new.split("\0") if name]
    return tracked + "".join(a for a in added if a)


def _git(where: Path | str, *args: str, ok: tuple[int, ...] = (0,)) -> str | None:
    """git's output, run in the folder `where`; None when git fails (no checkout: a wheel)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, errors="replace", timeout=10, cwd=where)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode in ok else None


def _overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
