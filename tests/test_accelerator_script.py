"""scripts/accelerator/: the one-command accelerator run, dry-run on the CPU.

run.sh takes every setting from the environment, so here it trains one tiny synthetic cell on
the CPU into a temporary store and must still leave what a device run leaves: a summary naming
every phase and a records.tar.gz of parseable top-level records. prepare.sh must refuse, in one
line and before writing anything, a data_dir without MNIST; unpack.sh must never overwrite a
different record.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from dfarun.run.record import parse

from helpers import ROOT

SCRIPTS = ROOT / "scripts" / "accelerator"
PHASES = ("setup", "tests", "bench", "estimate", "train")

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")),
                                reason="the accelerator scripts need bash and GNU coreutils' timeout")


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DFARUN_THREADS", "OUT")}
    return {**env, **extra}


def test_run_dry_on_cpu(tmp_path):
    """One synthetic cell, one epoch, two seeds; no GPU probe, no benches: about 5 s on an idle
    2-core machine (most of it importing torch), 30 s on a busy one."""
    out = tmp_path / "out"
    env = script_env(
        OUT=str(out), STORE=str(tmp_path / "store"), DATA=str(tmp_path / "data"), SITE=str(tmp_path / "site"),
        ACCEL=str(tmp_path / "no-accel"), TMPDIR=str(tmp_path), PYTHON=sys.executable, DEVICE="cpu",
        PROBE="0", PHASES="tests train", DEADLINE_S="150", MIN_CELL_S="5", CONCURRENT="1", REUSE="",
        CELLS="1x800_tanh:dfa", DFARUN_THREADS="1",
        EXTRA="dataset=synthetic dataset.train_size=128 dataset.test_size=64 dataset.features=16 "
              "max_epochs=1 compile=false seeds=[0,1]")
    proc = subprocess.run(["bash", str(SCRIPTS / "run.sh")], env=env, capture_output=True, text=True,
                          timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    summary = (out / "summary.txt").read_text()
    for phase in PHASES:
        assert any(line.startswith(phase + " ") for line in summary.splitlines()), summary
    assert "cells: 1 started, 1 finished" in summary, summary
    assert "no CUDA device" in summary

    with tarfile.open(out / "records.tar.gz") as tar:
        members = tar.getmembers()
        names = sorted(m.name for m in members)
        assert all(m.isfile() and "/" not in m.name and m.name.endswith(".json") for m in members), names
        records = {m.name: json.load(io.TextIOWrapper(tar.extractfile(m))) for m in members}
    assert len(records) == 2, names  # one per seed; checkpoints, locks, live/ stay behind
    for name, rec in records.items():
        parsed = parse(rec, Path(name))  # the tables' own reader: a whole record of this version
        assert (parsed.method, parsed.model, parsed.profile, parsed.epochs) == ("dfa", "1x800_tanh", "paper", 1)
    assert sorted(rec["seed"] for rec in records.values()) == [0, 1]
    assert (out / "train.log").is_file() and not list(tmp_path.glob("dfarun-accel.*"))  # its temp folder is gone


def test_bench_and_estimate_run_each_argument_set_in_turn(tmp_path):
    """BENCH_ARGS and ESTIMATE_ARGS take ';'-separated argument sets, one bench process each
    (the estimate: one per set and table), logged in order; empty sets cost no run. A stand-in
    python that prints the arguments it was given takes the benches' place: the loop is under
    test here, not the bench (whose options test_train.py runs), and a real python would cost
    an import of torch per run."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in -m\\ dfarun.cli.bench*) echo "usage: $*" ;; *) exit 1 ;; esac\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = script_env(
        OUT=str(out), ACCEL=str(tmp_path / "no-accel"), DATA=str(tmp_path / "data"), SITE=str(tmp_path / "site"),
        TMPDIR=str(tmp_path), PYTHON=str(fake), PROBE="0", PHASES="bench estimate", DEADLINE_S="150",
        BENCH_ARGS="--help ; ; --eager --help ;", ESTIMATE_TABLES="1 2", ESTIMATE_ARGS="--help;--eager --help")
    proc = subprocess.run(["bash", str(SCRIPTS / "run.sh")], env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = (out / "bench.log").read_text().splitlines()
    assert bench == ["-- bench run 1: --help", "usage: -m dfarun.cli.bench --help",
                     "-- bench run 2: --eager --help", "usage: -m dfarun.cli.bench --eager --help"]
    estimate = (out / "estimate.log").read_text().splitlines()
    runs = [(sets, t) for sets in ("--help", "--eager --help") for t in (1, 2)]  # each set, then each table
    assert estimate == [line for sets, t in runs for line in (
        f"-- estimate, table {t}: {sets}", f"usage: -m dfarun.cli.bench --skip mlp,conv --estimate --tables {t} {sets}")]


@pytest.mark.parametrize("knob", ["DEADLINE_S=500s", "T_BENCH=abc", "MIN_CELL_S=-1", "DEADLINE_S=0700", "CONCURRENT=0"])
def test_a_bad_number_is_refused_before_anything_runs(tmp_path, knob):
    """bash would read DEADLINE_S=500s as 0 (every phase skipped, exit 0) and loop forever on
    CONCURRENT=0."""
    name, value = knob.split("=")
    proc = subprocess.run(["bash", str(SCRIPTS / "run.sh")], capture_output=True, text=True, timeout=60,
                          env=script_env(OUT=str(tmp_path / "out"), **{name: value}))
    assert proc.returncode == 2 and proc.stderr.startswith(f"run.sh: error: {knob}: expected a whole number")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_cells_of_a_skipped_train_phase_count_as_not_started(tmp_path):
    out = tmp_path / "out"
    env = script_env(OUT=str(out), ACCEL=str(tmp_path / "no-accel"), DATA=str(tmp_path / "data"),
                     SITE=str(tmp_path / "site"), TMPDIR=str(tmp_path), PYTHON=sys.executable, PROBE="0",
                     PHASES="tests", CELLS="1x800_tanh:dfa 1x800_tanh:bp")
    proc = subprocess.run(["bash", str(SCRIPTS / "run.sh")], env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 not started: 1x800_tanh:dfa 1x800_tanh:bp" in (out / "summary.txt").read_text()


def test_a_signal_during_a_phase_packs_at_once(tmp_path):
    """SIGTERM while a phase's command runs (here a bench that would take a minute) stops it and
    packs within seconds, not when the phase's time is up."""
    slow = tmp_path / "python"
    slow.write_text('#!/bin/sh\ncase "$*" in *dfarun.cli.bench*) echo benching; sleep 60 ;; *) exit 1 ;; esac\n')
    slow.chmod(0o755)
    out = tmp_path / "out"
    env = script_env(OUT=str(out), ACCEL=str(tmp_path / "no-accel"), DATA=str(tmp_path / "data"),
                     SITE=str(tmp_path / "site"), TMPDIR=str(tmp_path), PYTHON=str(slow), PROBE="0",
                     PHASES="bench", BENCH_ARGS="x", DEADLINE_S="150")
    proc = subprocess.Popen(["bash", str(SCRIPTS / "run.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, log = time.monotonic() + 30, out / "bench.log"
        while not (log.exists() and "benching" in log.read_text()):  # the bench has started
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and time.monotonic() - sent < 15
    assert "bench     signal" in (out / "summary.txt").read_text()


def test_prepare_without_mnist_says_so_in_one_line(tmp_path):
    accel = tmp_path / "accel"
    proc = subprocess.run(["bash", str(SCRIPTS / "prepare.sh")], capture_output=True, text=True, timeout=60,
                          env=script_env(DATA_DIR=str(tmp_path / "nowhere"), ACCEL=str(accel)))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("prepare.sh: error: no MNIST in"), proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr and "DATA_DIR" in proc.stderr
    assert not accel.exists()  # checked before anything is written


def _archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_adds_new_records_and_never_overwrites(tmp_path):
    dest = tmp_path / "records"
    dest.mkdir()
    (dest / "a_seed0.json").write_text('{"seed": 0}')
    unpack = ["bash", str(SCRIPTS / "unpack.sh")]

    ok = _archive(tmp_path / "ok.tar.gz", {"a_seed0.json": '{"seed": 0}', "a_seed1.json": '{"seed": 1}'})
    proc = subprocess.run([*unpack, str(ok), str(dest)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "1 new record(s)" in proc.stdout and "1 already there" in proc.stdout
    assert (dest / "a_seed1.json").read_text() == '{"seed": 1}'

    clash = _archive(tmp_path / "clash.tar.gz", {"a_seed0.json": '{"seed": 0, "x": 1}', "a_seed2.json": "{}"})
    proc = subprocess.run([*unpack, str(clash), str(dest)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "a_seed0.json" in proc.stderr
    assert (dest / "a_seed0.json").read_text() == '{"seed": 0}' and not (dest / "a_seed2.json").exists()

    for bad in ({"checkpoints/x.pt": "x"}, {"../evil.json": "{}"}, {".hidden.json": "{}"}):
        proc = subprocess.run([*unpack, str(_archive(tmp_path / "bad.tar.gz", bad)), str(dest)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "not a record" in proc.stderr, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a_seed0.json", "a_seed1.json"]

    usage = subprocess.run(unpack, capture_output=True, text=True, timeout=60)
    assert (usage.returncode, usage.stderr) == (2, "unpack.sh: error: usage: unpack.sh RECORDS.tar.gz [DEST]\n")
    proc = subprocess.run([*unpack, str(ok), str(dest / "a_seed0.json")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "a_seed0.json: not a folder" in proc.stderr, proc.stderr
