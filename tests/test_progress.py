"""What a running job shows and leaves on disk: live history, progress lines, job names,
TensorBoard scalars. Tiny synthetic jobs (helpers.TINY)."""
from __future__ import annotations

import json
import logging
import os

import pytest

import dfarun.run.progress as progress
import dfarun.engine.train as train
from dfarun.run import store
from dfarun.report import tables
from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records

from helpers import TINY, record, run_dfarun


SMALL = "model=3x50_tanh"


class Crash(Exception):
    """Stands in for the process dying."""


def live_rows(cfg, seed: int) -> list[dict]:
    return [json.loads(line) for line in store.live_path(cfg, seed).read_text().splitlines()]


def test_each_epoch_reaches_the_live_history_as_it_is_computed(make_cfg, monkeypatch):
    cfg = make_cfg(SMALL, "seeds=[0,1]", "max_epochs=4")
    seen = []  # what a reader of the store finds after each epoch's checkpoint

    def spy(path, state):
        seen.append([len(live_rows(cfg, s)) for s in (0, 1)])
        if state["epoch"] == 2:
            raise Crash  # killed after epoch 2: no record yet, but the history is on disk
        save(path, state)

    save = store.save_checkpoint
    monkeypatch.setattr(store, "save_checkpoint", spy)
    with pytest.raises(Crash):
        run(cfg)
    assert seen == [[1, 1], [2, 2]]
    assert not store.record_path(cfg, 0).exists()
    assert [r["epoch"] for r in live_rows(cfg, 0)] == [1, 2]

    # the rerun resumes from the epoch-1 checkpoint: the live file is cut back to what the
    # checkpoint holds, then grows again, and ends equal to the record's history
    monkeypatch.setattr(store, "save_checkpoint", save)
    records = run(cfg)
    for seed, rec in zip((0, 1), records):
        assert live_rows(cfg, seed) == rec["history"]
        assert [r["epoch"] for r in rec["history"]] == [1, 2, 3, 4]


def test_tables_read_records_only_not_live_files(make_cfg, tmp_path, capsys):
    cfg = make_cfg(SMALL, "seeds=[0,1]")
    run(cfg)
    assert store.live_path(cfg, 0).is_file()
    store.write(tmp_path / "runs" / "cell.json", record())  # a Table 1 cell's record, so tables has work
    assert tables.main(["--store", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_lines_carry_the_clock_a_bound_on_time_left_and_each_final_seed(make_cfg, caplog):
    cfg = make_cfg(SMALL, "seeds=[0,1]", "max_epochs=3")
    with caplog.at_level(logging.INFO, logger="dfarun"):
        run(cfg)
    lines = [r.getMessage() for r in caplog.records]
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 3
    assert all(line[:8].count(":") == 2 for line in epochs)           # HH:MM:SS first
    assert "left" in epochs[0] and "left" not in epochs[-1]          # nothing left after the cap
    finals = [i for i, line in enumerate(lines) if " seed " in line and "max_epochs after 3 epochs" in line]
    assert len(finals) == 2 and finals[0] == lines.index(epochs[-1]) + 1  # right after its last epoch


def test_long_epochs_show_progress_inside_without_a_terminal(make_cfg, caplog, monkeypatch):
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)  # every mini-batch counts as "long"
    cfg = make_cfg(SMALL, "max_epochs=1")
    with caplog.at_level(logging.INFO, logger="dfarun"):
        run(cfg)
    inside = [r.getMessage() for r in caplog.records if "of the epoch" in r.getMessage()]
    assert inside and "(1/4 mini-batches" in inside[0]  # 256 examples in batches of 64


def test_sweep_lines_name_their_job_and_records_keep_the_command_line(tmp_path):
    store_dir = tmp_path / "runs"
    out = run_dfarun(tmp_path, "-m", *TINY, SMALL, "method=bp,dfa", f"store={store_dir}")  # in-process: no start-up
    assert out.code == 0, out.err
    epoch_lines = [line for line in out.out.splitlines() if " epoch " in line]
    assert len(epoch_lines) == 4
    assert sum(line.startswith("[#0 synthetic 3x50 Tanh bp] ") for line in epoch_lines) == 2
    assert sum(line.startswith("[#1 synthetic 3x50 Tanh dfa] ") for line in epoch_lines) == 2
    rec = json.loads(next(store_dir.glob("*_dfa_*seed0.json")).read_text())
    assert "method=dfa" in rec["overrides"] and SMALL in rec["overrides"]


def test_tensorboard_logger_writes_each_seeds_scalars(make_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(SMALL, "seeds=[0,1]", "max_epochs=3", "logger=tensorboard", "track_alignment=true",
                   "align_every=1")
    records = run(cfg)
    for seed, rec in zip((0, 1), records):
        events = EventAccumulator(str(store.tensorboard_dir(cfg, seed)))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"train/error", "test/error", "train/loss", "lr", "align_signal/layer1",
                "align_update/layer3"} <= tags
        test_error = [(e.step, e.value) for e in events.Scalars("test/error")]
        assert test_error == [(h["epoch"], pytest.approx(h["test_error"])) for h in rec["history"]]
    # the logger does not change which experiment a record belongs to
    assert store.experiment_key(cfg) == store.experiment_key(make_cfg(SMALL, "seeds=[0,1]", "max_epochs=3",
                                                                    "track_alignment=true", "align_every=1"))


def test_epoch_line_formats_every_split():
    rows = [{"epoch": 1, "train_error": 10.0, "test_error": 12.0, "seconds": 1.5},
            {"epoch": 1, "train_error": 20.0, "test_error": 14.0, "seconds": 1.5}]
    line = train.epoch_line(1, 300, rows)
    assert "train  15.00% [10.00-20.00]" in line and "test  13.00% [12.00-14.00]" in line and "(2 seeds)" in line


def test_an_unknown_logger_is_one_line_and_exit_2(tmp_path):
    # in-process (the console script's own code path; test_validation.py runs the real script)
    out = run_dfarun(tmp_path, *TINY, SMALL, "logger.name=wandb", f"store={tmp_path / 'runs'}")
    assert out.code == 2
    assert out.line() == "dfarun: error: logger.name='wandb': expected one of none, tensorboard"
    assert os.listdir(tmp_path) == []


def test_live_rows_are_strict_json_like_the_record(make_cfg):
    """NaN and inf (a diverged loss, an angle against a zero vector) become null, as in the record."""
    cfg = make_cfg(SMALL, "max_epochs=1", "track_alignment=true", "align_every=1")
    [rec] = run(cfg)
    text = store.live_path(cfg, 0).read_text()

    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    rows = [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
    assert rows == rec["history"]
    line = store.json_line({"train_loss": float("inf"), "align_signal": [float("nan"), 45.0]})
    assert json.loads(line, parse_constant=refuse) == {"train_loss": None, "align_signal": [None, 45.0]}
