"""The training regime beyond the constant rate: the auto schedule (halvings, the moving
average, divergence) and the validation hold-out (docs/protocol.md, "Training regime").

Unit tests work on hand-built states and `toy_data`; the end-to-end ones go through
`runner.run` on the tiny synthetic set of conftest.py with the small 3x50_tanh model.
"""
from __future__ import annotations

import pytest
import torch

import dfarun.config.schema as config
import dfarun.run.provenance as provenance
import dfarun.run.runner as runner
import dfarun.engine.train as train
from dfarun.config.schema import row_label
from dfarun.errors import ConfigError
from dfarun.config.checks import validate
from dfarun.engine.data import Data, load
from dfarun.engine.rules import RULES
from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records
from dfarun.engine.state import AVG_START, State, init_state
from dfarun.engine.train import AVG_KEEP, MAX_HALVINGS, Protocol

from helpers import CPU

SMALL = "model=3x50_tanh"


# --- schedule=auto ----------------------------------------------------------------------------

AUTO = Protocol(1e-3, 64, 300, schedule="auto")


def fresh_state(seeds=(0, 1)) -> State:
    return init_state(list(seeds), [4, 5, 3], "tanh", RULES["dfa"], CPU)


def test_auto_schedule_halves_only_when_the_error_is_not_below_the_average():
    state = fresh_state()
    state.epoch = 1
    state.avg = [0.2, 0.2]
    # seed 0 below the average: rate kept; seed 1 equal to it ("not below"): rate halved
    assert train._step_schedule(state, 0, 0.1, 1.0, AUTO) is None
    assert train._step_schedule(state, 1, 0.2, 1.0, AUTO) is None
    assert state.lr_scale == [1.0, 0.5]
    assert state.halvings == [0, 1]
    assert state.avg[0] == pytest.approx(0.75 * 0.2 + 0.25 * 0.1)
    assert state.avg[1] == pytest.approx(0.2)
    # above the average: halved again
    assert train._step_schedule(state, 1, 0.9, 1.0, AUTO) is None
    assert state.lr_scale[1] == 0.25 and state.halvings[1] == 2
    # schedule=constant never halves
    state.avg = [0.2, 0.2]
    assert train._step_schedule(state, 0, 0.9, 1.0, Protocol(1e-3, 64, 300)) is None
    assert state.lr_scale[0] == 1.0 and state.halvings[0] == 0


def test_moving_average_update_from_the_start():
    state = fresh_state()
    assert state.avg == [AVG_START, AVG_START] == [1.0, 1.0]
    errs = [0.5, 0.4, 0.45, 0.1]
    m = 1.0
    for k, err in enumerate(errs, 1):
        state.epoch = k
        train._step_schedule(state, 0, err, 1.0, AUTO)
        m = 0.75 * m + 0.25 * err
        assert state.avg[0] == pytest.approx(m, rel=1e-12)
    assert AVG_KEEP == 0.75
    # every error was below the average at the time (m: 1, 0.875, 0.75625, ...): never halved
    assert state.halvings[0] == 0 and state.lr_scale[0] == 1.0
    assert state.avg[1] == 1.0      # the other seed is untouched


def test_eighth_halving_ends_the_schedule():
    state = fresh_state()
    stops = []
    for k in range(1, 20):
        state.epoch = k
        stops.append(train._step_schedule(state, 0, 1.0, 1.0, AUTO))  # error never below m
        if stops[-1] is not None:
            break
    assert MAX_HALVINGS == 8
    assert stops == [None] * 7 + ["schedule_end"]
    assert state.halvings[0] == 8 and state.lr_scale[0] == 2.0 ** -8


def test_step_schedule_halves_every_n_epochs_and_runs_to_max_epochs():
    """schedule=step is the author's `-epoch_step N`: halve after epochs N, 2N, ... whatever the
    error, with no end of its own: a seed stops on convergence or at max_epochs."""
    state = fresh_state()
    step = Protocol(1e-3, 64, 25, schedule="step", halve_every=3)
    stops, scales = [], []
    for k in range(1, 26):
        state.epoch = k
        stops.append(train._step_schedule(state, 0, 0.5, 1.0, step))
        scales.append(state.lr_scale[0])
    assert scales[:7] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert state.halvings[0] == 8 and scales[-1] == 2.0 ** -8   # 8 halvings do not end it
    assert stops == [None] * 24 + ["max_epochs"]
    # converging still ends it
    state.avg[1] = 1e-4  # m <- 0.75e-4 after an error-free epoch: below STOP_AT (0.01%)
    state.epoch = 4
    assert train._step_schedule(state, 1, 0.0, 1.0, step) == "converged"


@pytest.mark.parametrize("halve_every", [0, -1])
def test_a_step_schedule_without_a_period_is_refused_where_it_is_built(halve_every):
    with pytest.raises(ValueError, match=f"halve_every={halve_every}: expected an int >= 1"):
        Protocol(1e-3, 64, 25, schedule="step", halve_every=halve_every)
    Protocol(1e-3, 64, 25, schedule="auto", halve_every=halve_every)  # unused there: no check


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_non_finite_loss_diverges(loss):
    state = fresh_state()
    state.epoch = 1
    assert train._step_schedule(state, 0, 0.1, loss, AUTO) == "diverged"
    assert train._step_schedule(state, 1, 0.1, loss, Protocol(1e-3, 64, 300)) == "diverged"


def test_auto_schedule_in_fit_halves_the_next_epochs_rate_and_records_it(monkeypatch, toy_data):
    data = toy_data   # 200 training examples
    fractions = [0.5, 0.9, 0.1, 0.8, 0.2]   # m: 1 -> .875 -> .88125 -> .6859 -> .7144 -> .5858
    halve_after = [False, True, False, True, False]
    scales_used = []

    def scripted_epoch(state, data, rule, protocol, on_step=None, step=None):
        scales_used.append(list(state.lr_scale))
        err = fractions[state.epoch - 1]
        n = len(state.seeds)
        return torch.full((n,), err * 200), torch.ones(n), None

    monkeypatch.setattr(train, "train_epoch", scripted_epoch)
    state = init_state([0], [12, 16, 3], "tanh", RULES["dfa"], CPU)
    [r] = train.fit(state, data, RULES["dfa"], Protocol(0.1, 64, 5, schedule="auto"))
    assert r.stop == "max_epochs"
    expected, scale = [], 1.0
    for h in halve_after:
        expected.append(scale)
        scale /= 2 if h else 1
    assert [s[0] for s in scales_used] == expected == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert [h["lr"] for h in r.history] == pytest.approx([0.1 * s for s in expected])
    assert [h["train_error"] for h in r.history] == pytest.approx([100 * f for f in fractions])


# --- validation hold-out ------------------------------------------------------------------

def test_hold_out_takes_the_last_examples():
    x = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10)
    d = Data(x, y, x[:3], y[:3]).hold_out(4)
    assert d.y_train.tolist() == [0, 1, 2, 3, 4, 5]
    assert d.y_val.tolist() == [6, 7, 8, 9]
    assert torch.equal(d.x_val, x[6:])
    assert list(d.evaluation()) == ["val", "test"]


def test_val_true_through_run_reports_val_error_and_best_val(make_cfg, monkeypatch):
    monkeypatch.setattr(config, "VAL_SIZE", 100)
    seen = {}
    real_fit = runner.fit
    monkeypatch.setattr(runner, "fit", lambda state, data, *a, **k: (seen.setdefault("data", data), real_fit(state, data, *a, **k))[1])
    cfg = make_cfg(SMALL, "val=true", "max_epochs=4", "seeds=[0,1]")
    records = run(cfg)

    full = load(cfg.dataset, cfg.data_dir, CPU)
    data = seen["data"]
    assert torch.equal(data.x_val, full.x_train[-100:]) and torch.equal(data.y_val, full.y_train[-100:])
    assert torch.equal(data.x_train, full.x_train[:-100])
    assert torch.equal(data.x_test, full.x_test)

    for rec in records:
        hist = rec["history"]
        assert rec["stop"] == "max_epochs" and len(hist) == 4
        for h in hist:
            assert {"val_error", "test_error", "train_error"} <= set(h)
            # percentages of 156 training and 100 validation examples
            assert h["train_error"] * 1.56 == pytest.approx(round(h["train_error"] * 1.56))
            assert h["val_error"] == pytest.approx(round(h["val_error"]))
        best = min(hist, key=lambda h: (h["val_error"], h["epoch"]))
        assert rec["best_val"] == best
        assert rec["config"]["val"] is True
    assert [h["val_error"] for h in records[0]["history"]] != [h["test_error"] for h in records[0]["history"]]


def test_best_val_is_the_earliest_epoch_of_the_minimum(make_cfg):
    cfg = make_cfg(SMALL, "val=true", "max_epochs=4")
    context = provenance.context(cfg, CPU, 1, row_label(cfg), provenance.Code(None, None, None))
    hist = [{"epoch": k, "val_error": v, "train_error": 1.0, "test_error": t, "train_loss": 0.5, "seconds": 1.0}
            for k, (v, t) in enumerate([(5.0, 9.0), (2.0, 7.0), (3.0, 6.0), (2.0, 5.0)], 1)]
    rec = provenance.record(context, train.SeedResult(0, "max_epochs", hist), 1.0)
    assert rec["best_val"]["epoch"] == 2 and rec["best_val"]["test_error"] == 7.0
    assert rec["test_error"] == 5.0   # the final epoch's, beside it
    diverged = provenance.record(context, train.SeedResult(0, "diverged", hist), 1.0)
    assert "best_val" not in diverged


def test_val_true_needs_more_examples_than_the_hold_out(make_cfg):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(SMALL, "val=true", "dataset.train_size=500"))
    assert str(info.value).startswith("val=")
    with pytest.raises(ConfigError):
        validate(make_cfg(SMALL, "val=true", f"dataset.train_size={config.VAL_SIZE}"))
    validate(make_cfg(SMALL, "val=true", f"dataset.train_size={config.VAL_SIZE + 1}"))
    validate(make_cfg("val=true", tiny=False))   # MNIST, all 60,000 examples
