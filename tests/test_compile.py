"""The compiled training step (step.Step: torch.compile of the whole step) equals the eager one.

Every rule on the MLP, and every rule the conv net has, each with dropout and FGSM on, so
one compiled graph per case holds the forward pass, the rule's signals, eq. (10), RMSprop,
the error count, the dropout thresholds and the adversarial input gradient. "Equal" is up to
float rounding: the compiled kernels fuse and reorder the element-wise arithmetic.
The `cuda` tests run the same comparison on a GPU, where the step is also a CUDA graph
(skipped without one; scripts/accelerator/run.sh runs them on an accelerator machine).
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch._dynamo.utils import counters

from dfarun.engine.conv import ConvArch
from dfarun.engine.data import Data
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import Step
from dfarun.engine.train import Protocol, errors_on, fit, train_epoch

from helpers import CPU

CONV = ConvArch(in_shape=(2, 8, 8), channels=(3, 4), fc=(6,), classes=3)  # pools 8 -> 3 -> 1
MLP = [12, 10, 10, 3]
# dropout on every site and FGSM: the longest graph each rule makes
PROTOCOL = Protocol(1e-2, 16, 2, p_input=0.1, p_hidden=0.3, p_conv=(0.2, 0.4), eps=0.05, compile=True)


def data_for(arch, n: int = 80, device=CPU) -> Data:
    """n noisy points around 3 prototypes (an image per point for the conv net), 48 to train on."""
    features = 12 if arch is MLP else 2 * 8 * 8
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(3, features, generator=g)
    y = torch.randint(3, (n,), generator=g)
    x = (protos[y] + 0.2 * torch.randn(n, features, generator=g)).clamp(0, 1)
    shape = None if arch is MLP else CONV.in_shape
    return Data(x[:48].to(device), y[:48].to(device), x[48:].to(device), y[48:].to(device), shape=shape)


def train_both(arch, method: str, device=CPU, protocol: Protocol = PROTOCOL):
    """Two epochs of seeds [0, 1] eagerly and compiled, from the same init; both states and
    their per-epoch (errors, loss)."""
    data, rule = data_for(arch, device=device), RULES[method]
    eager, compiled = (init_state([0, 1], arch, "tanh", rule, device) for _ in range(2))
    steps = Step(False, device), Step(True, device)
    counters.clear()
    out = []
    with torch.no_grad():
        for _ in range(protocol.max_epochs):
            row = []
            for state, step, p in zip((eager, compiled), steps, (replace(protocol, compile=False), protocol)):
                state.epoch += 1
                errors, loss, _ = train_epoch(state, data, rule, p, step=step)
                row.append((errors, loss))
            out.append(row)
    return eager, compiled, out, data


def assert_equal_runs(eager, compiled, out, data) -> None:
    assert not Step.failed, "the compiled step fell back to eager"
    assert not counters["graph_break"], f"the step did not compile whole: {dict(counters['graph_break'])}"
    assert counters["stats"]["unique_graphs"] == 1  # it really ran compiled, and never recompiled
    for (e_err, e_loss), (c_err, c_loss) in out:
        assert torch.equal(e_err, c_err)
        torch.testing.assert_close(e_loss, c_loss, rtol=1e-4, atol=1e-4)
    for a, b in zip(eager.net.params + eager.sq_avg, compiled.net.params + compiled.sq_avg):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(eager.net.weights[-1], torch.zeros_like(eager.net.weights[-1]))  # it learned
    assert torch.equal(errors_on(eager.net, data.x_test, data.y_test), errors_on(compiled.net, data.x_test, data.y_test))


@pytest.mark.parametrize("arch,method", [(MLP, m) for m in ("bp", "fa", "dfa", "ifa")]
                         + [(CONV, m) for m in ("bp", "fa", "dfa")], ids=lambda v: v if isinstance(v, str) else
                         ("mlp" if v is MLP else "conv"))
def test_compiled_step_equals_eager(arch, method):
    assert_equal_runs(*train_both(arch, method))


def test_fit_compiles_once_per_job_and_runs_the_short_last_batch_eagerly(toy_data):
    """200 examples in batches of 64: three compiled steps and an eager one of 8 per epoch;
    two epochs need no second graph, and the records equal an eager fit's."""
    rule, calls = RULES["dfa"], []
    results = {}
    for compile in (False, True):
        state = init_state([0, 1], [12, 8, 3], "tanh", rule, CPU)
        counters.clear()
        protocol = Protocol(1e-2, 64, 2, compile=compile)
        results[compile] = fit(state, toy_data, rule, protocol, on_rows=lambda *a: None,
                               on_step=lambda done, total: calls.append((compile, done, total)))
    assert counters["stats"]["unique_graphs"] == 1
    for a, b in zip(results[False], results[True]):
        assert [r["train_error"] for r in a.history] == [r["train_error"] for r in b.history]
        assert [r["test_error"] for r in a.history] == [r["test_error"] for r in b.history]
    assert calls.count((True, 4, 4)) == 2


# --- on a GPU ---------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("arch,method", [(MLP, "bp"), (MLP, "dfa"), (CONV, "dfa")],
                         ids=["mlp-bp", "mlp-dfa", "conv-dfa"])
def test_cuda_compiled_step_equals_eager(arch, method):
    assert_equal_runs(*train_both(arch, method, torch.device("cuda")))


@pytest.mark.cuda
def test_cuda_step_runs_as_a_cuda_graph():
    """mode="reduce-overhead" records the step once and replays it: no cudagraph was skipped
    (mutated inputs not marked static would skip it, silently, with a log line)."""
    train_both(MLP, "dfa", torch.device("cuda"), replace(PROTOCOL, max_epochs=3))
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
