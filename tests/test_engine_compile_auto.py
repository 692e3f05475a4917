"""compile=auto, and compiling kept out of the epochs' times.

A job compiles its step where the work it has to go reaches the device's break-even
(step.compile_pays: seed-steps on a CPU, steps on CUDA, never a conv net on a CPU; measured by
`python -m dfarun.cli.bench --break-even`); true and false stay as they were. The seconds a compile takes are its own line and the row's
`compile_seconds`, never part of an epoch's `seconds` or the bound on the time left."""
from __future__ import annotations

import logging
import time

import pytest
import torch

import dfarun.engine.step as step_module
import dfarun.run.progress as progress
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import Step, compile_mode, compile_pays, sgd_step
from dfarun.engine.train import Protocol, fit

from helpers import CPU


@pytest.mark.parametrize("value,mode", [(True, True), (False, False), ("auto", "auto"), ("AUTO", "auto"),
                                        ("true", True), ("True", True), ("false", False), ("False", False),
                                        (1, True), (0, False), (1.0, True)])
def test_compile_setting_reads_auto_true_and_false(value, mode):
    assert compile_mode(value) == mode and type(compile_mode(value)) is type(mode)


@pytest.mark.parametrize("value", ["maybe", "", "1", 2, 0.5, [1], None])
def test_any_other_compile_setting_is_refused(value):
    with pytest.raises(ValueError, match="expected auto, true or false"):
        compile_mode(value)


@pytest.fixture
def compiles(monkeypatch):
    """Step._compile's calls (with the reason it gives), without compiling anything."""
    calls = []
    monkeypatch.setattr(Step, "_compile", lambda self, why: calls.append(why))
    monkeypatch.setattr(step_module, "COMPILE_PAYS_AFTER", {"cpu": 8})
    return calls


@pytest.mark.parametrize("seeds,max_epochs,resumed_at,compiled", [([0], 2, 0, True), ([0], 1, 0, False),
                                                                   ([0], 3, 1, True), ([0], 3, 2, False),
                                                                   ([0, 1], 1, 0, True)])
def test_auto_compiles_a_job_with_enough_work_to_go(compiles, toy_data, caplog, seeds, max_epochs, resumed_at,
                                                     compiled):
    """200 examples in batches of 64: 4 steps an epoch, for each seed; the break-even is set at
    8 seed-steps. A resumed job counts only the epochs it has left."""
    rule = RULES["dfa"]
    state = init_state(seeds, [12, 8, 3], "tanh", rule, CPU)
    state.epoch = resumed_at
    step = Step("auto", CPU)
    with caplog.at_level(logging.INFO, logger="dfarun"):
        fit(state, toy_data, rule, Protocol(1e-2, 64, max_epochs, compile="auto"), on_rows=lambda *a: None, step=step)
    assert (len(compiles) == 1) == compiled and step.mode is compiled
    said = " ".join(compiles) if compiled else caplog.text
    assert f"{4 * len(seeds) * (max_epochs - resumed_at)} seed-steps to go" in said
    assert "pays after about 8 on cpu" in said


def test_the_break_even_counts_seed_steps_on_a_cpu_and_steps_on_cuda(monkeypatch):
    monkeypatch.setattr(step_module, "COMPILE_PAYS_AFTER", {"cpu": 100, "cuda": 100})
    cuda = torch.device("cuda")  # only a name here: nothing runs on it
    assert compile_pays(CPU, False, 50, 2)[0] and not compile_pays(CPU, False, 49, 2)[0]
    assert compile_pays(cuda, False, 100, 1)[0] and not compile_pays(cuda, False, 99, 10)[0]
    assert compile_pays(cuda, True, 100, 1)[0]  # the conv net compiles on CUDA...
    pays, why = compile_pays(CPU, True, 10**9, 10)  # ...but never on a CPU, where compiled is the slower
    assert not pays and "slower" in why


def test_auto_decides_once_per_job_and_true_false_do_not_ask(compiles):
    step = Step("auto", CPU)
    step.plan(7, 1, conv=False)
    step.plan(10**9, 1, conv=False)  # a later pass of the same job (seed_stack) keeps the first decision
    assert compiles == [] and step.mode is False
    for setting in (True, False):
        Step(setting, CPU).plan(0, 1, conv=True)
    assert len(compiles) == 1  # compile=true compiles whatever the work and network; false never


def test_auto_trains_eagerly_where_compiling_has_no_break_even(compiles):
    step = Step("auto", torch.device("meta"))  # a device COMPILE_PAYS_AFTER does not name
    step.plan(10**9, 1, conv=False)
    assert compiles == [] and step.mode is False


def slow_compile(seconds: float):
    """A stand-in for torch.compile: each new kind of call costs `seconds` first."""
    def compiled(*args):
        if len(args[6]) not in seen:  # idx: one kind per stack size
            seen.add(len(args[6]))
            time.sleep(seconds)
        return sgd_step(*args)
    seen = set()
    return compiled


def test_compile_seconds_are_not_an_epochs_seconds(toy_data, monkeypatch):
    """The "compile" (0.6 s, at the first step) is the epoch-1 row's compile_seconds; its
    `seconds` and epoch 2's are training only, and the rows equal an eager fit's."""
    monkeypatch.setattr(Step, "_compile", lambda self, why: setattr(self, "compiled", slow_compile(0.6)))
    rule, results = RULES["dfa"], {}
    for setting in (False, True):
        state = init_state([0, 1], [12, 8, 3], "tanh", rule, CPU)
        results[setting] = fit(state, toy_data, rule, Protocol(1e-2, 64, 2, compile=setting), on_rows=lambda *a: None)
    first, second = results[True][0].history
    assert first["compile_seconds"] >= 0.6 and first["seconds"] < 0.5
    assert "compile_seconds" not in second and "compile_seconds" not in results[False][0].history[0]
    for a, b in zip(results[False], results[True]):
        assert [r["train_error"] for r in a.history] == [r["train_error"] for r in b.history]


def test_a_seed_leaving_the_stack_is_a_new_graph_timed_as_compiling():
    """The kinds of call Step times as compiling: the first stack size, the first other
    one (dynamic), a stack of one, and another frozen layer set; a repeat costs nothing."""
    s = Step(True, CPU)
    kinds = [s._stack_kind(n) for n in (10, 10, 9, 8, 1, 10)]
    assert kinds == ["first", "first", "dynamic", "dynamic", 1, "first"]


def test_the_compile_line_and_a_time_left_without_it(make_cfg, caplog, monkeypatch):
    """A 100 s compile then a 1 s epoch: the line says 100 s, the bound says 299 epochs x 1 s."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    reporter = progress.Reporter(make_cfg(), [0], [[]], 0, 1e-3)
    now[0] = 101.0
    row = {"epoch": 1, "train_error": 50.0, "test_error": 50.0, "train_loss": 1.0, "seconds": 1.0,
           "compile_seconds": 100.0}
    with caplog.at_level(logging.INFO, logger="dfarun"):
        reporter.rows(1, {0: row}, 300)
    reporter.close()
    compiled, epoch = [r.getMessage() for r in caplog.records]
    assert "compiled the training step in 100.0s" in compiled and "epoch   1/300" in epoch
    assert epoch.endswith("≤ 4m59s left")
