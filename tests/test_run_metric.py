"""`run(cfg)` returns the job's metric, which Hydra's sweepers minimise: the mean over the
job's seeds of the test error, or with val=true of the validation error at the epoch chosen on
it; `run_records(cfg)` returns the records themselves (tiny synthetic set, 3x50_tanh)."""
from __future__ import annotations

from statistics import mean

import pytest

from dfarun.config import schema
from dfarun.run.runner import DIVERGED, metric, run, run_records

SMALL = "model=3x50_tanh"


def test_run_returns_the_mean_test_error_of_the_jobs_seeds(make_cfg, train_calls):
    cfg = make_cfg(SMALL, "seeds=[0,1,2]")
    value = run(cfg)
    records = run_records(cfg)  # found, not trained again
    assert train_calls == [[0, 1, 2]]
    assert type(value) is float
    assert value == pytest.approx(mean(r["test_error"] for r in records))
    assert run(make_cfg(SMALL, "seeds=[2,0]")) == pytest.approx(mean(r["test_error"] for r in records[::2]))


def test_with_val_true_it_is_the_validation_error_at_the_epoch_chosen_on_it(make_cfg, monkeypatch):
    monkeypatch.setattr(schema, "VAL_SIZE", 100)
    cfg = make_cfg(SMALL, "val=true", "max_epochs=4", "seeds=[0,1]")
    value = run(cfg)
    records = run_records(cfg)
    assert value == pytest.approx(mean(min(h["val_error"] for h in r["history"]) for r in records))


def test_a_diverged_seed_counts_as_the_worst_error(make_cfg):
    learned = {"stop": "converged", "test_error": 2.0, "best_val": {"val_error": 3.0}}
    diverged = {"stop": "diverged", "test_error": None}
    assert DIVERGED == 100.0
    assert metric(make_cfg(SMALL), [learned, diverged]) == pytest.approx((2.0 + DIVERGED) / 2)
    assert metric(make_cfg(SMALL, "val=true"), [learned, diverged]) == pytest.approx((3.0 + DIVERGED) / 2)
