"""Shared fixtures: configs composed exactly as the CLI composes them, shrunk to tiny sizes.
(Plain helper functions and constants the test modules share are in helpers.py.)"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import dfarun.run.runner as runner
from dfarun.config.schema import CONF_DIR
from dfarun.engine.data import Data

from helpers import TINY


@pytest.fixture(autouse=True)
def _determinism():
    torch.manual_seed(0)
    yield


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg("method=bp", ...) -> a composed DictConfig writing records under tmp_path."""
    def make(*overrides: str, tiny: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = TINY if tiny else []
            return compose("config", overrides=[*base, f"store={tmp_path / 'runs'}", *overrides])
    return make


@pytest.fixture
def train_calls(monkeypatch):
    """Spy on runner._train: the list of seed lists it was asked to train (it still trains)."""
    calls: list[list[int]] = []
    real = runner._train

    def spy(cfg, seeds, *rest):
        calls.append(list(seeds))
        return real(cfg, seeds, *rest)

    monkeypatch.setattr(runner, "_train", spy)
    return calls


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks every CIFAR file against the real files' md5 sums, which files
    written by a test cannot match: check only that the file exists (torchvision's
    CIFAR10._check_integrity and _load_meta both call this module-level function)."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def toy_data() -> Data:
    """300 noisy points around 3 prototypes in [0, 1]^12: 200 to train on, 100 to test."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(3, 12, generator=g)
    y = torch.randint(3, (300,), generator=g)
    x = (protos[y] + 0.1 * torch.randn(300, 12, generator=g)).clamp(0, 1)
    return Data(x[:200], y[:200], x[200:], y[200:])


def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` need a Slurm cluster on this machine, and tests marked `cuda` a CUDA
    device; without one they are skipped, saying why (make test-slurm starts a cluster and runs
    them; scripts/accelerator/run.sh runs the cuda ones on a GPU machine)."""
    if not torch.cuda.is_available():
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="no CUDA device here (scripts/accelerator/run.sh runs these on one)"))
    marked = [item for item in items if "slurm" in item.keywords]
    if marked and (why := _no_slurm_cluster()):
        if os.environ.get("DFARUN_SLURM_REQUIRED"):  # make test-slurm: a skip would read as a pass
            raise pytest.UsageError(f"the slurm tests cannot run: {why}")
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=why))


def _no_slurm_cluster() -> str | None:
    """Why the slurm tests cannot run here, or None when they can."""
    hint = "`make test-slurm` starts a one-node cluster and runs them"
    conf = os.environ.get("SLURM_CONF")
    if not conf:  # not the cluster of a login node, whose nodes do not see this machine's /tmp
        return f"no Slurm cluster up (SLURM_CONF is not set): {hint}"
    if not shutil.which("sinfo"):
        return f"Slurm is not installed: {hint}"
    try:
        out = subprocess.run(["sinfo", "--noheader", "--format=%N"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"the Slurm cluster of SLURM_CONF={conf} does not answer: {hint}"
    if out.returncode != 0:
        return f"the Slurm cluster of SLURM_CONF={conf} does not answer ({out.stderr.strip()}): {hint}"
    if out.stdout.split() != [socket.gethostname().split(".")[0]]:
        return f"the Slurm cluster of SLURM_CONF={conf} is not one node on this machine: {hint}"
    return None
