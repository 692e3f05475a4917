"""The console scripts' own guard (dfarun/entry.py): Ctrl-C before a script's guard exists, and
a reader that went away, are never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dfarun.cli import entry
from dfarun.run import store

from helpers import DFARUN, FAST, cli_env, finish, record

SCRIPT = "import sys; from dfarun.cli import entry; sys.argv[0] = {name!r}; entry.{func}()"


def start(argv: list[str], cwd, stdout, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)


def closed_stdout(argv: list[str], cwd) -> subprocess.Popen:
    """`argv` started with its stdout a pipe whose reader has gone: every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return start(argv, cwd, write, cli_env(DFARUN_THREADS="1"))
    finally:
        os.close(write)


def test_training_goes_on_when_its_reader_goes_away(tmp_path):
    runs = tmp_path / "runs"
    done = finish(closed_stdout([*DFARUN, *FAST, "max_epochs=2", "seeds=[0,1]", f"store={runs}"], tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    assert len(list(runs.glob("*.json"))) == 2  # both seeds' records, as without the pipe


@pytest.mark.parametrize("name, func, args", [
    ("dfarun-tables", "tables", ["--tables", "1"]),
    ("dfarun-figures", "figures", ["--only", "fig2_right"]),
])
def test_a_reader_that_went_away_stops_the_tools_quietly(tmp_path, name, func, args):
    store.write(tmp_path / "runs" / "a.json", record())
    argv = lambda out: [sys.executable, "-c", SCRIPT.format(name=name, func=func), "--store", "runs", *args,
                        "--out", out]
    # the two runs side by side, each into its own folder (a run is one Python thread: the other core is free)
    piped = closed_stdout(argv("piped"), tmp_path)
    with open("/dev/full", "w") as full_device:
        full = start(argv("full"), tmp_path, full_device, cli_env())
    done, full = finish(piped), finish(full)
    notes = lambda err: [line for line in err.splitlines() if not line.startswith(f"{name}: note: ")]
    assert (done.returncode, notes(done.stderr)) == (entry.BROKEN_PIPE, []), done.stderr  # fig2_right lacks BP, FA
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
