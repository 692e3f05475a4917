"""Atomic writes: a record or checkpoint write that dies half-way (a full disk, Ctrl-C)
leaves the previous file intact and no partial or temporary file behind. (Killing whole
jobs and resuming them: test_resume.py.)"""
from __future__ import annotations

import os

import pytest
import torch

from dfarun.run import store
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state

from helpers import CPU


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_a_record_write_that_dies_leaves_no_partial_record_and_no_temp_file(tmp_path, monkeypatch, error):
    path = tmp_path / "runs" / "synthetic_x_dfa_0123456789_seed0.json"
    old = {"format": store.FORMAT, "seed": 0, "test_error": 1.5}
    store.write(path, old)
    real_dump = store.json.dump
    seen_mid_write = []

    def dies_half_way(obj, f, **kwargs):
        f.write('{"format": 1, "seed": 0, "hist')     # half a record reaches the disk ...
        f.flush()
        seen_mid_write.append(store.read(path))      # ... yet readers still see the old one
        raise error

    monkeypatch.setattr(store.json, "dump", dies_half_way)
    with pytest.raises(type(error)):
        store.write(path, {**old, "test_error": 2.5})
    assert seen_mid_write == [old]
    assert store.read(path) == old
    assert os.listdir(path.parent) == [path.name]

    # and a first write that dies leaves no file at all
    fresh = path.with_name("synthetic_x_dfa_0123456789_seed1.json")
    with pytest.raises(type(error)):
        store.write(fresh, old)
    assert store.read(fresh) is None
    assert os.listdir(path.parent) == [path.name]

    monkeypatch.setattr(store.json, "dump", real_dump)
    store.write(fresh, old)
    assert store.read(fresh) == old
    assert fresh.stat().st_mode & 0o777 == 0o644


def test_a_checkpoint_write_that_dies_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    state = init_state([0], [4, 5, 3], "tanh", RULES["dfa"], CPU)
    path = tmp_path / "checkpoints" / "job.pt"
    store.save_checkpoint(path, state.to_dict())
    state.epoch = 7

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        store.save_checkpoint(path, state.to_dict())
    assert os.listdir(path.parent) == ["job.pt"]
    assert store.load_checkpoint(path)["epoch"] == 0
