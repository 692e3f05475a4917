"""Shared fixtures: configs composed exactly as the CLI composes them, shrunk to tiny sizes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dfarun.config import CONF_DIR
from dfarun.data import Data

ROOT = Path(__file__).resolve().parent.parent
# the dfarun CLI of this checkout, whichever dfarun the venv has installed
DFARUN = [sys.executable, "-c", "from dfarun.cli import main; import sys; sys.argv[0] = 'dfarun'; main()"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives `dfarun`, with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DFARUN_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


TINY = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128",
        "dataset.features=16", "compile=false", "max_epochs=2", "device=cpu"]


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
def toy_data() -> Data:
    """300 noisy points around 3 prototypes in [0, 1]^12: 200 to train on, 100 to test."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(3, 12, generator=g)
    y = torch.randint(3, (300,), generator=g)
    x = (protos[y] + 0.1 * torch.randn(300, 12, generator=g)).clamp(0, 1)
    return Data(x[:200], y[:200], x[200:], y[200:])
