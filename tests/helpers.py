"""Helpers shared by the test modules (fixtures live in conftest.py). Plain functions and
constants: a test module imports what it uses, `from helpers import ...`."""
from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfarun.cli import main as cli
from dfarun.report import cells as protocol
from dfarun.run import store
from dfarun.engine.data import Data
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.train import Protocol, train_epoch


# --- this checkout, the CPU, and the dfarun CLI as a user's shell runs it --------------

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")

# the dfarun CLI of this checkout, whichever dfarun the venv has installed
DFARUN = [sys.executable, "-c", "from dfarun.cli.entry import dfarun; import sys; sys.argv[0] = 'dfarun'; dfarun()"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives `dfarun`, with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DFARUN_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


TINY = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128",
        "dataset.features=16", "compile=false", "max_epochs=2", "device=cpu"]


# --- data files in the real formats ---------------------------------------------------

def assert_close(actual, expected):
    # float32 min-max scaling multiplies by 1/(hi-lo): allow an ulp or two of difference
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=1e-6, atol=1e-6)


def write_idx_images(path: Path, pixels: np.ndarray) -> None:
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (28, 28)
    path.write_bytes(struct.pack(">IIII", 2051, len(pixels), 28, 28) + pixels.tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, x_train, y_train, x_test, y_test) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx_images(raw / "train-images-idx3-ubyte", x_train)
    write_idx_labels(raw / "train-labels-idx1-ubyte", y_train)
    write_idx_images(raw / "t10k-images-idx3-ubyte", x_test)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", y_test)


def mnist_arrays(rng, n_train=50, n_test=20, lo=0, hi=255, test_lo=0, test_hi=255):
    x_train = rng.integers(lo, hi + 1, size=(n_train, 28, 28), dtype=np.uint8)
    x_train[0, 0, 0], x_train[1, 5, 7] = lo, hi  # the training range is exactly [lo, hi]
    x_test = rng.integers(test_lo, test_hi + 1, size=(n_test, 28, 28), dtype=np.uint8)
    y_train = rng.integers(0, 10, size=n_train).astype(np.uint8)
    y_test = rng.integers(0, 10, size=n_test).astype(np.uint8)
    return x_train, y_train, x_test, y_test


# --- stacked seeds --------------------------------------------------------------------

def assert_stack_trains_as_alone(arch, method: str, data: Data, protocol: Protocol, epochs: int):
    """Train seeds [3, 5, 7] stacked and seed 5 alone for `epochs`; seed 5 must count the same
    errors, reach the same loss and end with the same parameters either way. Returns both states."""
    stacked = init_state([3, 5, 7], arch, "tanh", RULES[method], CPU)
    alone = init_state([5], arch, "tanh", RULES[method], CPU)
    for _ in range(epochs):
        e_stack, l_stack, _ = train_epoch(stacked, data, RULES[method], protocol)
        e_alone, l_alone, _ = train_epoch(alone, data, RULES[method], protocol)
        assert e_stack[1] == e_alone[0]
        torch.testing.assert_close(l_stack[1], l_alone[0], rtol=1e-4, atol=1e-4)
    for p_stack, p_alone in zip(stacked.net.params, alone.net.params):
        torch.testing.assert_close(p_stack[1], p_alone[0], rtol=1e-4, atol=1e-5)
    return stacked, alone


# --- the console script in-process, for one-line errors -------------------------------

ONE_LINE = "dfarun: "


# small and fast: 128 examples of 8 features, one epoch of a 3x50 net
FAST = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32", "dataset.features=8",
        "model=3x50_tanh", "max_epochs=1", "compile=false", "device=cpu"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def line(self) -> str:
        """The one line on stderr (asserting that there is exactly one, and no traceback)."""
        lines = self.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(ONE_LINE), self.err
        assert "Traceback" not in self.out + self.err
        return lines[0]


def run_dfarun(cwd: Path, *argv: str, env: dict | None = None) -> Result:
    """`dfarun argv` in-process, in folder cwd: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    # a job sets torch's threads for the process (cli.main._set_threads): put them back after it
    saved_argv, saved_env, saved_threads = sys.argv, dict(os.environ), torch.get_num_threads()
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update(env or {})
    sys.argv = ["dfarun", *argv]
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
    return Result(code, out.getvalue(), err.getvalue())


# --- records (as runner writes them) ---------------------------------------------------

def record(row="2x800 Tanh", method="dfa", seed=0, test=1.5, train=0.0, stop="converged",
           dataset="mnist", key="k1", seeds=(0, 1, 2), max_epochs=20, profile="quick", epochs=None, **extra):
    """A valid record of this version (as runner writes it, less what no reader uses)."""
    epochs = epochs or min(7, max_epochs)
    history = [{"epoch": k, "train_error": 50.0 / k, "test_error": 40.0 / k, "train_loss": 1.0 / k,
                "seconds": 1.0} for k in range(1, epochs + 1)]
    config = paper_settings({"dataset": {"name": dataset}, "model": {"name": row.split()[0].lower()},
                             "method": {"name": method}, "reg": {"name": "none"}}, row)
    return {"format": store.FORMAT, "key": key, "row": row, "seed": seed, "stop": stop, "epochs": epochs,
            "train_error": train, "test_error": test, "history": history,
            "config": config | {"seeds": list(seeds), "max_epochs": max_epochs, "profile": profile}, **extra}


def paper_settings(config: dict, row: str, frozen: bool = False) -> dict:
    """`config` with the settings of the paper's cell (its data set, `row`, its method: a table's
    cell, or a figure's) laid over it, as a record of that cell run by dfarun has them
    (protocol.py); unchanged for other rows."""
    cell = (config["dataset"]["name"], row, config["method"]["name"])
    settings = protocol.paper_cells().get(cell) or (protocol.figure_cell(*cell, frozen) or ({},))[0]
    _merge(config, copy.deepcopy(settings))
    return config


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def comparable(rec: dict) -> dict:
    """A record less what legitimately differs between two runs of one experiment."""
    keep = {k: rec[k] for k in ("seed", "key", "row", "stop", "epochs", "train_error", "test_error")}
    keep["best_val"] = rec.get("best_val", {}) and {k: v for k, v in rec["best_val"].items() if k != "seconds"}
    keep["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in rec["history"]]
    keep["config"] = {k: v for k, v in rec["config"].items() if k != "store"}
    return keep


# --- the installed console script -----------------------------------------------------

SCRIPT_TINY = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "dataset.features=16", "compile=false"]


def dfarun_script() -> str:
    here = Path(sys.executable).parent / "dfarun"  # the venv running pytest
    found = str(here) if here.exists() else shutil.which("dfarun")
    assert found, "the dfarun console script is not installed (pip install -e .)"
    return found


def dfarun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # as a user sees it
    return subprocess.run([dfarun_script(), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """A started process, waited for (killed if it outlives `timeout` seconds): its code and
    whatever of stdout and stderr it was given pipes for."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
