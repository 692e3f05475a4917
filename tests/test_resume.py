"""Epoch checkpoints: a job killed mid-epoch resumes where its last checkpoint left it and
ends with the very records of an uninterrupted run; unreadable checkpoints are ignored.
(A write that dies half-way: test_atomic.py.)

In-process tests crash `run` by making `step.updates` raise mid-epoch (sgd_step looks
`updates` up in dfarun.engine.step at call time, so that is where it is patched); one test kills
the real `dfarun` console script with SIGKILL. On the CPU the resumed run is expected to be
bit-identical to the uninterrupted one, so histories are compared with ==.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dfarun.engine.step as step
from dfarun.run import store
from dfarun.engine.rules import RULES
from dfarun.run.job import load_state
from dfarun.run.runner import run_records
from dfarun.engine.state import init_state

from helpers import CPU, comparable

SMALL = "model=3x50_tanh"
BATCHES = 4   # the tiny set (helpers.TINY): 256 training examples in batches of 64


class Crash(Exception):
    """Stands in for the process dying."""


def files_under(root: Path) -> list[str]:
    """Every file below root, dotfiles included, relative to it; the live histories
    (live/*.jsonl, checked in test_progress.py) and the code diffs beside the records of a
    checkout with uncommitted changes (test_run_provenance.py) aside."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not (p.parent.name == "live" and p.suffix == ".jsonl") and p.suffix != ".diff")


@pytest.fixture
def count_updates(monkeypatch):
    """Count step.updates calls; raise Crash on call number `crash_at` (None: never)."""
    real = step.updates
    box = {"calls": 0, "crash_at": None}

    def counted(*args, **kwargs):
        box["calls"] += 1
        if box["calls"] == box["crash_at"]:
            raise Crash(f"killed in update {box['calls']}")
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "updates", counted)
    return box


# --- in-process crash and resume ------------------------------------------------------------

@pytest.mark.parametrize("reg", ["none", "dropout"])
def test_crash_mid_epoch_then_resume_gives_the_uninterrupted_records(
        make_cfg, tmp_path, count_updates, caplog, reg):
    caplog.set_level(logging.INFO, logger="dfarun")
    args = (SMALL, "method=dfa", f"reg={reg}", "max_epochs=6", "seeds=[0,1,2]")
    cfg_a = make_cfg(*args, f"store={tmp_path / 'A'}")
    cfg_b = make_cfg(*args, f"store={tmp_path / 'B'}")
    assert store.checkpoint_path(cfg_a).name == store.checkpoint_path(cfg_b).name

    uninterrupted = run_records(cfg_a)
    assert count_updates["calls"] == 6 * BATCHES
    assert all(r["stop"] == "max_epochs" and r["epochs"] == 6 for r in uninterrupted)
    assert files_under(tmp_path / "A") == sorted(store.record_path(cfg_a, s).name for s in (0, 1, 2))

    # die in the second batch of epoch 4
    count_updates.update(calls=0, crash_at=3 * BATCHES + 2)
    with pytest.raises(Crash):
        run_records(cfg_b)
    ckpt = store.checkpoint_path(cfg_b)
    assert files_under(tmp_path / "B") == [f"checkpoints/{ckpt.name}"]   # no records, no temp files
    saved = store.load_checkpoint(ckpt)
    assert saved["epoch"] == 3 and saved["seeds"] == [0, 1, 2]
    assert [len(h) for h in saved["history"]] == [3, 3, 3]

    count_updates.update(calls=0, crash_at=None)
    caplog.clear()
    resumed = run_records(cfg_b)
    assert "resuming seeds [0, 1, 2] after epoch 3" in caplog.text
    assert count_updates["calls"] == 3 * BATCHES        # epochs 4-6 only: it really resumed
    assert [comparable(r) for r in resumed] == [comparable(r) for r in uninterrupted]
    for seed, rec in zip((0, 1, 2), resumed):
        assert store.read(store.record_path(cfg_b, seed)) == rec
    # the checkpoint and any temp file are gone (their folder stays, empty): only the records remain
    assert files_under(tmp_path / "B") == sorted(store.record_path(cfg_b, s).name for s in (0, 1, 2))
    assert not list(ckpt.parent.iterdir())


def test_a_checkpoint_resumes_whole_under_a_smaller_seed_stack(make_cfg, tmp_path, count_updates, caplog):
    """A stacked job killed mid-run, rerun with seed_stack=1: its one checkpoint holds all three
    seeds, so they resume together (a pass of one would overwrite the others' progress)."""
    caplog.set_level(logging.INFO, logger="dfarun")
    args = (SMALL, "method=dfa", "max_epochs=4", "seeds=[0,1,2]")
    uninterrupted = run_records(make_cfg(*args, f"store={tmp_path / 'A'}"))
    count_updates.update(calls=0, crash_at=2 * BATCHES + 1)   # die at the start of epoch 3
    cfg = make_cfg(*args, f"store={tmp_path / 'B'}")
    with pytest.raises(Crash):
        run_records(cfg)
    count_updates.update(calls=0, crash_at=None)
    resumed = run_records(make_cfg(*args, f"store={tmp_path / 'B'}", "seed_stack=1"))
    assert "resuming seeds [0, 1, 2] after epoch 2" in caplog.text
    assert count_updates["calls"] == 2 * BATCHES                 # epochs 3-4, once
    for got, want in zip(resumed, uninterrupted):
        assert got["config"]["seed_stack"] == 1 and want["config"]["seed_stack"] is None
        got, want = comparable(got), comparable(want)
        for rec in (got, want):  # the one setting that differs, and changes no number
            rec["config"] = {k: v for k, v in rec["config"].items() if k != "seed_stack"}
        assert got == want


def test_another_seed_lists_checkpoint_is_named_not_silently_passed_over(make_cfg, tmp_path, count_updates, caplog):
    """A job's checkpoint is its own (its seed list is in the name): a rerun with more seeds
    trains them all from the start, and says which checkpoint it leaves to its own job."""
    caplog.set_level(logging.INFO, logger="dfarun")
    count_updates.update(crash_at=2 * BATCHES + 1)  # seeds [0, 1] die in epoch 3
    with pytest.raises(Crash):
        run_records(make_cfg(SMALL, "max_epochs=4", "seeds=[0,1]"))
    [left] = list((tmp_path / "runs" / "checkpoints").glob("*.pt"))
    count_updates.update(crash_at=None)
    run_records(make_cfg(SMALL, "max_epochs=4", "seeds=[0,1,2]"))
    assert f"not resuming seeds [0, 1] from {left}: a job with another seed list made it" in caplog.text
    assert left.exists()  # its own job resumes it: `seeds=[0,1]` then finds the records and drops it
    run_records(make_cfg(SMALL, "max_epochs=4", "seeds=[0,1]"))
    assert not left.exists()


def test_crash_while_writing_the_records_resumes_only_the_unwritten_seeds(
        make_cfg, tmp_path, count_updates, monkeypatch, caplog):
    """Seed 0's record is on disk, seed 1's write dies: the rerun skips 0 and resumes 1 and 2
    from the epoch-1 checkpoint (cut down to those seeds)."""
    caplog.set_level(logging.INFO, logger="dfarun")
    args = (SMALL, "method=dfa", "max_epochs=2", "seeds=[0,1,2]")
    uninterrupted = run_records(make_cfg(*args, f"store={tmp_path / 'A'}"))
    cfg = make_cfg(*args, f"store={tmp_path / 'B'}")

    real_write = store.write

    def dies_on_seed_1(path, record):
        if record["seed"] == 1:
            raise Crash("killed while writing seed 1")
        real_write(path, record)

    monkeypatch.setattr(store, "write", dies_on_seed_1)
    with pytest.raises(Crash):
        run_records(cfg)
    monkeypatch.setattr(store, "write", real_write)
    ckpt = store.checkpoint_path(cfg)
    assert files_under(tmp_path / "B") == sorted([store.record_path(cfg, 0).name, f"checkpoints/{ckpt.name}"])

    count_updates["calls"] = 0
    caplog.clear()
    resumed = run_records(cfg)
    assert "skipping seeds [0]" in caplog.text
    assert "resuming seeds [1, 2] after epoch 1" in caplog.text
    assert count_updates["calls"] == BATCHES            # one epoch, seeds 1 and 2 stacked
    assert [r["seed"] for r in resumed] == [0, 1, 2]
    assert comparable(resumed[0]) == comparable(uninterrupted[0])
    # a 2-seed stack instead of 3: equal up to float rounding (see test_runner's stacked test)
    for got, want in zip(resumed[1:], uninterrupted[1:]):
        assert (got["stop"], got["epochs"]) == (want["stop"], want["epochs"])
        assert [h["train_loss"] for h in got["history"]] == pytest.approx(
            [h["train_loss"] for h in want["history"]], rel=1e-4)
    assert not list(ckpt.parent.iterdir())


def test_resume_cuts_the_checkpoint_to_the_seeds_asked_for(tmp_path, caplog):
    state = init_state([0, 1, 2], [6, 7, 3], "tanh", RULES["bp"], CPU)
    state.epoch = 5
    state.lr_scale = [1.0, 0.5, 0.25]
    path = tmp_path / "ckpt.pt"
    store.save_checkpoint(path, state.to_dict())

    cut = load_state(path, [0, 2], CPU)
    assert cut.seeds == [0, 2] and cut.epoch == 5 and cut.lr_scale == [1.0, 0.25]
    for got, full in zip(cut.net.params + cut.sq_avg, state.net.params + state.sq_avg):
        assert torch.equal(got, full[[0, 2]])
    assert torch.equal(cut.data_order[1].get_state(), state.data_order[2].get_state())

    whole = load_state(path, [0, 1, 2], CPU)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(whole.noise, state.noise))
    assert torch.equal(cut.noise[1].get_state(), state.noise[2].get_state())
    assert all(torch.equal(a, b) for a, b in zip(whole.feedback, state.feedback))

    with caplog.at_level(logging.WARNING, logger="dfarun"):
        assert load_state(path, [0, 3], CPU) is None    # a seed the checkpoint does not hold
    assert "does not hold seeds" in caplog.text
    assert load_state(tmp_path / "missing.pt", [0], CPU) is None


# --- unreadable checkpoints -----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_checkpoint_is_ignored_with_a_warning_and_training_starts_afresh(
        make_cfg, tmp_path, count_updates, caplog, damage):
    args = (SMALL, "method=dfa", "reg=dropout", "max_epochs=3", "seeds=[0,1]")
    uninterrupted = run_records(make_cfg(*args, f"store={tmp_path / 'A'}"))
    cfg = make_cfg(*args, f"store={tmp_path / 'B'}")
    ckpt = store.checkpoint_path(cfg)
    ckpt.parent.mkdir(parents=True)
    if damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    else:   # a real checkpoint of this job, cut short
        sizes = [16, 50, 50, 50, 10]
        store.save_checkpoint(ckpt, init_state([0, 1], sizes, "tanh", RULES["dfa"], CPU).to_dict())
        blob = ckpt.read_bytes()
        ckpt.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"")

    count_updates["calls"] = 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dfarun"):
        records = run_records(cfg)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignoring unreadable checkpoint" in warnings[0].getMessage()
    assert "resuming" not in caplog.text
    assert count_updates["calls"] == 3 * BATCHES        # from scratch
    assert [comparable(r) for r in records] == [comparable(r) for r in uninterrupted]
    assert files_under(tmp_path / "B") == sorted(store.record_path(cfg, s).name for s in (0, 1))


def test_readable_but_foreign_checkpoint_is_ignored(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "not": "a state"}, path)
    assert load_state(path, [0], CPU) is None


# --- SIGKILL through the console script --------------------------------------------------------

CLI_ARGS = ["compile=false", "dataset=synthetic", "dataset.train_size=4000", "dataset.test_size=500", "dataset.features=64",
            "model=3x50_tanh", "method=dfa", "max_epochs=5", "seeds=[0,1]", "device=cpu"]


def dfarun_script() -> str:
    here = Path(sys.executable).parent / "dfarun"
    found = str(here) if here.exists() else shutil.which("dfarun")
    assert found, "the dfarun console script is not installed (pip install -e .)"
    return found


def test_sigkill_mid_epoch_then_rerun_resumes_to_the_uninterrupted_records(make_cfg, tmp_path):
    runs = tmp_path / "cli"
    cmd = [dfarun_script(), *CLI_ARGS, f"store={runs}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    checkpoints = runs / "checkpoints"

    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not list(checkpoints.glob("*.pt")):   # the first epoch's checkpoint
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 180 s"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)              # epoch 2 has just started
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL             # killed, not finished
    assert not list(runs.glob("*.json"))
    assert len(list(checkpoints.glob("*.pt"))) == 1

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    resumed_at = [line for line in out.stdout.splitlines() if line.startswith("resuming seeds [0, 1] after epoch")]
    assert len(resumed_at) == 1, out.stdout
    assert 1 <= int(resumed_at[0].split()[-3]) < 5
    assert files_under(runs) == sorted(p.name for p in runs.glob("*_seed[01].json"))
    assert len(files_under(runs)) == 2

    cfg = make_cfg(*CLI_ARGS, tiny=False)   # the same experiment, uninterrupted, in-process
    reference = run_records(cfg)
    resumed = [store.read(runs / store.record_path(cfg, s).name) for s in (0, 1)]
    assert [comparable(r) for r in resumed] == [comparable(r) for r in reference]


def test_force_retrains_from_scratch_but_resumes_its_own_interrupted_run(make_cfg, tmp_path, count_updates, caplog):
    """force=true replaces the records and ignores a checkpoint from before; a force=true job
    that dies leaves a checkpoint that the same command resumes ("rerun the same command")."""
    caplog.set_level(logging.INFO, logger="dfarun")
    args = (SMALL, "method=dfa", "max_epochs=6", "seeds=[0,1]")
    old = run_records(make_cfg(*args, "max_epochs=6"))
    cfg = make_cfg(*args, "force=true")
    count_updates.update(calls=0, crash_at=3 * BATCHES + 2)   # dies in epoch 4 of the forced run
    with pytest.raises(Crash):
        run_records(cfg)
    assert store.load_checkpoint(store.checkpoint_path(cfg))[store.FORCED] > 0  # when the forced job began
    count_updates.update(calls=0, crash_at=None)
    caplog.clear()
    forced = run_records(cfg)                                         # the same command again
    assert "resuming seeds [0, 1] after epoch 3" in caplog.text and count_updates["calls"] == 3 * BATCHES
    same = lambda rs: [{k: v for k, v in comparable(r).items() if k != "config"} for r in rs]  # config: force
    assert same(forced) == same(old)  # the same training as before the force, written anew
    # a checkpoint a run *without* force left is not the forced job's: force starts afresh
    count_updates.update(calls=0, crash_at=3 * BATCHES + 2)
    with pytest.raises(Crash):
        run_records(make_cfg(*args, "seeds=[0,1,2]"))                 # seed 2 is new: it trains, and dies
    count_updates.update(calls=0, crash_at=None)
    caplog.clear()
    run_records(make_cfg(*args, "seeds=[0,1,2]", "force=true"))
    assert "resuming" not in caplog.text and count_updates["calls"] == 6 * BATCHES  # all 6 epochs, 3 seeds stacked


def test_a_forced_job_stopped_after_some_seeds_keeps_their_new_records(make_cfg, tmp_path, count_updates, caplog):
    """seed_stack=1: a force=true job killed while training its second seed. The same command
    resumes that seed and does not train the first again: its record is the forced job's own."""
    caplog.set_level(logging.INFO, logger="dfarun")
    args = (SMALL, "method=dfa", "max_epochs=3", "seeds=[0,1]", "seed_stack=1")
    run_records(make_cfg(*args))                                          # the records force=true replaces
    cfg = make_cfg(*args, "force=true")
    first = store.record_path(cfg, 0).stat().st_mtime_ns
    count_updates.update(calls=0, crash_at=3 * BATCHES + 2)       # seed 0: 3 epochs; dies in seed 1's first
    with pytest.raises(Crash):
        run_records(cfg)
    rewritten = store.record_path(cfg, 0).stat().st_mtime_ns
    assert rewritten > first                                      # seed 0 was trained again by the force
    count_updates.update(calls=0, crash_at=None)
    caplog.clear()
    run_records(cfg)
    assert "skipping seeds [0]" in caplog.text and "resuming seeds [1] after epoch 0" not in caplog.text
    assert count_updates["calls"] == 3 * BATCHES                  # seed 1 only
    assert store.record_path(cfg, 0).stat().st_mtime_ns == rewritten
