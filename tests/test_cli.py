"""The installed `dfarun` console script, run as a user runs it (cwd = a fresh tmp_path).

Each call pays seconds of imports, so the file makes four calls in all: one run, one sweep,
one bad value and `--help` into a closed pipe (test_validation.py has the full table).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from helpers import DFARUN, SCRIPT_TINY, cli_env, dfarun


def records(runs: Path) -> list[Path]:
    return sorted(runs.glob("*.json"))


def assert_only_records(runs: Path, also: set[str] = frozenset()) -> None:
    """The store holds the records, and folders of its own: locks/ and checkpoints/ (which stay,
    empty once no job runs), live/ (each seed's history as it was written) and what `also` names."""
    files = {p.name for p in runs.iterdir() if p.is_file()}
    folders = {p.name for p in runs.iterdir() if p.is_dir()}
    # a record made from code with uncommitted changes has that diff beside it (provenance)
    diffs = {p.with_suffix(".diff").name for p in records(runs) if json.loads(p.read_text())["git_dirty"]}
    assert files == {p.name for p in records(runs)} | diffs  # no temp files either
    assert "live" in folders and folders <= {"locks", "checkpoints", "live"} | set(also), folders
    assert not list(runs.glob("locks/*")) and not list(runs.glob("checkpoints/*"))


def test_single_run_prints_each_epoch_and_writes_only_its_records(tmp_path):
    runs = tmp_path / "runs"
    out = dfarun(tmp_path, *SCRIPT_TINY, "max_epochs=2", "seeds=[0,1]", f"store={runs}",
                 "model=2x800_tanh", "method=dfa")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr

    epochs = [int(m.group(1)) for m in re.finditer(r"^\d\d:\d\d:\d\d epoch\s+(\d+)/2\b", out.stdout, re.M)]
    assert epochs == [1, 2]

    assert os.listdir(tmp_path) == ["runs"]             # no outputs/, .hydra/ or log file
    files = records(runs)
    assert_only_records(runs)
    assert [p.name[-10:] for p in files] == ["seed0.json", "seed1.json"]
    recs = [json.loads(p.read_text()) for p in files]
    assert [r["seed"] for r in recs] == [0, 1]
    assert all(r["config"]["model"]["name"] == "2x800_tanh" and r["config"]["method"]["name"] == "dfa"
               and r["epochs"] == len(r["history"]) for r in recs)


def test_multirun_writes_one_record_per_job(tmp_path):
    runs = tmp_path / "runs"
    out = dfarun(tmp_path, "-m", "method=bp,dfa", "model=1x800_tanh,3x50_tanh", *SCRIPT_TINY,
                 "max_epochs=1", "device=cpu", f"store={runs}")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr

    names = {p.name for p in records(runs)}
    assert len(names) == 4
    assert {tuple(n.split("_")[1:4]) for n in names} == {
        (d, "tanh", m) for d in ("1x800", "3x50") for m in ("bp", "dfa")}
    assert os.listdir(tmp_path) == ["runs"]
    assert_only_records(runs, also={"sweeps"})
    assert len(list((runs / "sweeps").glob("*/multirun.yaml"))) == 1


def test_bad_value_exits_2_with_one_line_and_writes_nothing(tmp_path):
    # the installed script; every other bad value: test_validation, in-process
    runs = tmp_path / "runs"
    out = dfarun(tmp_path, *SCRIPT_TINY, "max_epochs=1", f"store={runs}", "max_epochs=0")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("dfarun: error: max_epochs=")
    assert "Traceback" not in out.stdout + out.stderr
    assert not runs.exists()
    assert os.listdir(tmp_path) == []


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    # `dfarun --help | head -1`: the reader goes away; that is no error of dfarun's to report
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([*DFARUN, "--help"], cwd=tmp_path, env=cli_env(), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, ""), done.stderr
