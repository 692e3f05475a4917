"""A changed setting (max_epochs, lr, ...) is another experiment, with another key, trained from
scratch: the job says so, naming the settings that differ from the nearest experiment with
records in the store, instead of retraining without a word (tiny synthetic set, 3x50_tanh)."""
from __future__ import annotations

import logging

import pytest

from dfarun.run.runner import run_records

SMALL = "model=3x50_tanh"
NEW = "a new experiment, trained from scratch"


@pytest.fixture
def said(caplog):
    """The job's lines, cleared for each job."""
    caplog.set_level(logging.INFO, logger="dfarun")

    def lines(cfg) -> list[str]:
        caplog.clear()
        run_records(cfg)
        return [r.getMessage() for r in caplog.records if NEW in r.getMessage()]
    return lines


def test_a_changed_setting_says_it_starts_a_new_experiment_and_why(make_cfg, train_calls, said):
    assert said(make_cfg(SMALL, "max_epochs=2")) == []            # a first run: nothing to compare with
    assert said(make_cfg(SMALL, "max_epochs=3")) == [f"max_epochs=3 (records exist with max_epochs=2): {NEW}"]
    assert train_calls == [[0], [0]]
    # the nearest experiment is named: this one differs from the last only in lr
    assert said(make_cfg(SMALL, "max_epochs=3", "lr=0.002")) == [f"lr=0.002 (records exist with lr=0.001): {NEW}"]
    assert said(make_cfg(SMALL, "max_epochs=4", "batch_size=32")) == [
        f"batch_size=32, max_epochs=4 (records exist with batch_size=64, max_epochs=3): {NEW}"]


def test_the_same_experiment_says_nothing_of_the_kind(make_cfg, train_calls, said):
    said(make_cfg(SMALL, "max_epochs=2"))
    said(make_cfg(SMALL, "max_epochs=3"))
    for args in (["max_epochs=3"], ["max_epochs=3", "seeds=[0,1]"], ["max_epochs=3", "force=true"],
                 ["max_epochs=3", "device=cpu", "compile=false", "seed_stack=1"]):   # skipped, more seeds, forced, runtime keys
        assert said(make_cfg(SMALL, *args)) == [], args
    assert train_calls == [[0], [0], [1], [0]]


def test_other_methods_records_are_not_this_experiments_siblings(make_cfg, said):
    """dfa_first's record names start as dfa's do ("..._dfa_" + "first_..."): they are not dfa's."""
    said(make_cfg(SMALL, "method=dfa_first", "max_epochs=2"))
    assert said(make_cfg(SMALL, "method=dfa", "max_epochs=3")) == []
    assert said(make_cfg(SMALL, "method=dfa_first", "max_epochs=3")) == [
        f"max_epochs=3 (records exist with max_epochs=2): {NEW}"]
