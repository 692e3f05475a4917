"""The console scripts' own guard (dfarun/entry.py): Ctrl-C before a script's guard exists, and
a reader that went away, are never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dfarun.cli import entry
from dfarun.run import store

from helpers import DFARUN, FAST, cli_env, record

SCRIPT = "import sys; from dfarun.cli import entry; sys.argv[0] = {name!r}; entry.{func}()"


def closed_stdout_run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """`argv` with its stdout a pipe whose reader has gone: every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, cwd=cwd, env=cli_env(DFARUN_THREADS="1"), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)


def test_training_goes_on_when_its_reader_goes_away(tmp_path):
    runs = tmp_path / "runs"
    done = closed_stdout_run([*DFARUN, *FAST, "max_epochs=2", "seeds=[0,1]", f"store={runs}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    assert len(list(runs.glob("*.json"))) == 2  # both seeds' records, as without the pipe


@pytest.mark.parametrize("name, func, args", [
    ("dfarun-tables", "tables", ["--tables", "1", "--out", "out"]),
    ("dfarun-figures", "figures", ["--out", "out", "--only", "fig2_right"]),
])
def test_a_reader_that_went_away_stops_the_tools_quietly(tmp_path, name, func, args):
    store.write(tmp_path / "runs" / "a.json", record())
    argv = [sys.executable, "-c", SCRIPT.format(name=name, func=func), "--store", "runs", *args]
    done = closed_stdout_run(argv, tmp_path)
    notes = lambda err: [line for line in err.splitlines() if not line.startswith(f"{name}: note: ")]
    assert (done.returncode, notes(done.stderr)) == (entry.BROKEN_PIPE, []), done.stderr  # fig2_right lacks BP, FA
    with open("/dev/full", "w") as full_device:
        full = subprocess.run(argv, cwd=tmp_path, env=cli_env(), stdout=full_device, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert full.returncode == 1
    assert notes(full.stderr) == [f"{name}: error: cannot write the output (No space left on device)"], full.stderr


def test_ctrl_c_before_a_scripts_own_guard_is_one_line(capsys):
    def load():  # as if Ctrl-C came while the script's module imports torch
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as stop:
        entry._guarded("dfarun-tables", load)
    assert stop.value.code == 130 and capsys.readouterr().err == "dfarun-tables: interrupted\n"


def test_a_scripts_exit_code_stays_its_own():
    with pytest.raises(SystemExit) as stop:
        entry._guarded("dfarun-tables", lambda: lambda: sys.exit(2))
    assert stop.value.code == 2
