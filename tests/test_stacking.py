"""Seeds as a tensor dimension: a seed trained in a stack gives the record it gives alone, and
`seed_stack` splits a job's seeds into passes (one at a time for conv nets on a CPU) without
changing any record, each pass holding only the locks of the seeds it trains.

Configs come from `make_cfg` (conftest.py), shrunk to the tiny synthetic set; the small
3x50_tanh model keeps each test around a second on two CPU cores.
"""
from __future__ import annotations

import logging

import pytest
import torch

import dfarun.run.runner as runner
from dfarun.run import store
from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records

SMALL = "model=3x50_tanh"

# --- stacked seeds = seeds alone -------------------------------------------------------------

@pytest.mark.parametrize("method", ["bp", "dfa"])
def test_stacked_seed_record_matches_the_seed_trained_alone(make_cfg, method):
    stacked = run(make_cfg(SMALL, f"method={method}", "max_epochs=3", "seeds=[0,1,2]"))
    alone = run(make_cfg(SMALL, f"method={method}", "max_epochs=3", "seeds=[1]", "force=true"))[0]
    together = stacked[1]
    assert together["stacked_seeds"] == 3 and alone["stacked_seeds"] == 1
    assert alone["key"] == together["key"]
    assert (alone["seed"], alone["stop"], alone["epochs"]) == (together["seed"], together["stop"], together["epochs"])
    assert [h["train_loss"] for h in alone["history"]] == pytest.approx(
        [h["train_loss"] for h in together["history"]], rel=1e-3)
    # error counts may differ by at most one example on a float tie: 1/256 train, 1/128 test
    for a, t in zip(alone["history"], together["history"]):
        assert a["train_error"] == pytest.approx(t["train_error"], abs=100 / 256 + 1e-9)
        assert a["test_error"] == pytest.approx(t["test_error"], abs=100 / 128 + 1e-9)
    # ... while another seed of the stack is a different run
    assert [h["train_loss"] for h in stacked[0]["history"]] != pytest.approx(
        [h["train_loss"] for h in together["history"]], rel=1e-3)


# --- seed_stack: how many seeds one pass trains ---------------------------------------------

CONV = ["dataset=synthetic_cifar", "dataset.features=3072", "dataset.train_size=64", "dataset.test_size=32", "model=conv_tanh",
        "model.channels=[3,4]", "model.width=8", "model.depth=1", "max_epochs=1", "batch_size=32",
        "whiten=false"]  # whitening (a 3072x3072 ZCA fit, seconds) has no say in how seeds are stacked


def test_seed_stack_splits_a_job_into_passes_with_unchanged_records(make_cfg, train_calls, caplog):
    """seed_stack=2 over seeds [0,1,2]: passes of [0,1] then [2], each seed's record as if stacked."""
    with caplog.at_level(logging.INFO, logger="dfarun"):
        split = run(make_cfg(SMALL, "method=dfa", "seeds=[0,1,2]", "seed_stack=2"))
    assert train_calls == [[0, 1], [2]]
    assert "training at most 2 seeds at a time" in caplog.text
    whole = run(make_cfg(SMALL, "method=dfa", "seeds=[0,1,2]", "force=true"))
    assert train_calls[-1] == [0, 1, 2]
    assert [r["stacked_seeds"] for r in split] == [2, 2, 1] and [r["stacked_seeds"] for r in whole] == [3, 3, 3]
    for a, b in zip(split, whole):
        assert (a["seed"], a["stop"], a["epochs"]) == (b["seed"], b["stop"], b["epochs"])
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], rel=1e-4)


def test_a_pass_holds_only_the_locks_of_the_seeds_it_trains(make_cfg, monkeypatch):
    """seed_stack=1 over seeds [0,1]: while seed 0 trains, seed 1 is free for another job."""
    real, free = runner._train, []

    def spy(cfg, seeds, *rest):
        for seed in (0, 1):
            if (lock := store.acquire(store.seed_lock(cfg, seed), wait=False)) is not None:
                free.append(seed)
                lock.release()
        return real(cfg, seeds, *rest)

    monkeypatch.setattr(runner, "_train", spy)
    run(make_cfg(SMALL, "seeds=[0,1]", "seed_stack=1"))
    assert free == [1, 0]  # pass [0]: 1 is free; pass [1]: 0 is (finished)


def test_conv_seeds_train_one_at_a_time_on_a_cpu_by_default(make_cfg, train_calls, caplog):
    with caplog.at_level(logging.INFO, logger="dfarun"):
        run(make_cfg(*CONV, "method=dfa", "seeds=[0,1]"))
    assert train_calls == [[0], [1]]
    assert "training at most 1 seed at a time (seed_stack=null: conv seeds do not gain from stacking on a CPU)" in caplog.text
    assert runner.seed_stack(make_cfg(*CONV, "seeds=[0,1]", "seed_stack=2"), torch.device("cpu")) == 2
    assert runner.seed_stack(make_cfg(*CONV, "seeds=[0,1,2]"), torch.device("cuda")) == 3
    assert runner.seed_stack(make_cfg(SMALL, "seeds=[0,1,2]"), torch.device("cpu")) == 3
