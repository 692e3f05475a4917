"""The conv net: BP == autograd, FA with B = W == BP, DFA == a hand computation, stacked seeds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfarun.engine.conv import ConvArch, ConvNet
from dfarun.engine.data import Data
from dfarun.engine.nets import Dropout
from dfarun.engine.rules import RULES
from dfarun.engine.state import State, init_state
from dfarun.engine.step import updates
from dfarun.engine.train import Protocol, errors_on, train_epoch

from helpers import CPU, assert_stack_trains_as_alone


ARCH = ConvArch(in_shape=(2, 12, 12), channels=(3, 4), fc=(6,), classes=3)  # pools 12 -> 5 -> 2
S, B = 2, 5


def double(net: ConvNet) -> ConvNet:
    return ConvNet([w.double() for w in net.weights], [b.double() for b in net.biases], net.activation, net.arch)


def random_net(activation: str = "tanh") -> ConvNet:
    return double(init_state(list(range(S)), ARCH, activation, RULES["bp"], CPU).net)  # uniform init


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(S, B, 2 * 12 * 12, generator=g, dtype=torch.float64)
    return x, torch.eye(3, dtype=torch.float64)[torch.randint(3, (S, B), generator=g)]


def reference(net: ConvNet, s: int, x: torch.Tensor):
    """Seed s's network written plainly with autograd leaves: (params, hidden outputs, a_y)."""
    params = [p[s].detach().clone().requires_grad_() for p in net.params]
    L = len(net.weights)
    W, b = params[:L], params[L:]
    f = {"tanh": torch.tanh, "relu": torch.relu}[net.activation]
    h, hs = x.view(-1, *ARCH.in_shape), []
    for k in range(net.n_conv):
        h = F.max_pool2d(f(F.conv2d(h, W[k], b[k], padding=ARCH.kernel // 2)), ARCH.pool, ARCH.pool_stride)
        hs.append(h)
    h = h.flatten(1)
    for k in range(net.n_conv, L - 1):
        h = f(h @ W[k].T + b[k])
        hs.append(h)
    return params, hs, h @ W[-1].T + b[-1]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_conv_bp_equals_autograd(activation):
    net = random_net(activation)
    x, target = batch()
    grads, _ = updates(net, [], RULES["bp"], x, target)
    for s in range(S):
        params, _, a_y = reference(net, s, x[s])
        loss = (F.softplus(a_y) - target[s] * a_y).sum()  # summed BCE, as trained
        for ours, theirs in zip(grads, torch.autograd.grad(loss, params)):
            torch.testing.assert_close(ours[s], theirs)


def test_conv_fa_with_feedback_equal_to_forward_weights_is_bp():
    net = random_net()
    x, target = batch(1)
    fa, _ = updates(net, [w.clone() for w in net.weights[1:]], RULES["fa"], x, target)
    bp, _ = updates(net, [], RULES["bp"], x, target)
    for a, b in zip(fa, bp):
        torch.testing.assert_close(a, b)


def test_conv_fa_uses_its_fixed_kernels_not_the_forward_ones():
    net = random_net()
    x, target = batch(2)
    B_ = [torch.randn_like(w) for w in net.weights[1:]]
    fa, _ = updates(net, B_, RULES["fa"], x, target)
    bp, _ = updates(net, [], RULES["bp"], x, target)
    assert not torch.allclose(fa[0], bp[0])
    torch.testing.assert_close(fa[len(net.weights) - 1], bp[len(net.weights) - 1])  # output layer: e


def test_conv_dfa_injects_e_times_b_at_each_pool_output():
    """Hand computation: δh_k = e B_k at block k's pooled output (and each fc hidden layer),
    then autograd through that layer alone (pool routing, tanh, convolution) gives dW_k."""
    state = init_state(list(range(S)), ARCH, "tanh", RULES["dfa"], CPU)
    assert [tuple(b.shape) for b in state.feedback] == [(S, 3, n) for n in ARCH.hidden]
    for b, n in zip(state.feedback, ARCH.hidden):  # uniform ±1/sqrt(C*H*W)
        assert b.abs().max() <= n ** -0.5 and b.abs().max() > 0.8 * n ** -0.5
    net, feedback = random_net(), [b.double() for b in state.feedback]
    x, target = batch(3)
    grads, _ = updates(net, feedback, RULES["dfa"], x, target)
    L = len(net.weights)
    for s in range(S):
        params, hs, a_y = reference(net, s, x[s])
        e = torch.sigmoid(a_y.detach()) - target[s]
        for k, h in enumerate(hs):
            dW, db = torch.autograd.grad(h, [params[k], params[L + k]], (e @ feedback[k][s]).view_as(h))
            torch.testing.assert_close(grads[k][s], dW)
            torch.testing.assert_close(grads[L + k][s], db)
        torch.testing.assert_close(grads[L - 1][s], e.T @ hs[-1].detach())


def test_conv_rules_start_from_zero_weights_and_still_learn():
    for method, zero in (("bp", False), ("fa", True), ("dfa", True)):
        state = init_state([0], ARCH, "tanh", RULES[method], CPU)
        assert all((w == 0).all() for w in state.net.params) == zero, method
    state = init_state([0], ARCH, "tanh", RULES["dfa"], CPU)
    x, target = (t.float() for t in batch())
    grads, _ = updates(state.net, state.feedback, RULES["dfa"], x[:1], target[:1])
    assert grads[0].abs().sum() > 0  # the first block learns from the first step


def test_conv_shared_evaluation_input_equals_per_seed_input():
    net = random_net()
    x = torch.rand(7, 2 * 12 * 12, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x).a_y, net.forward(x.expand(S, 7, -1).contiguous()).a_y)


def test_conv_dropout_masks_pooled_outputs_and_their_feedback():
    net = random_net()
    x, target = batch(4)
    gens = tuple(torch.Generator().manual_seed(i) for i in range(S))
    drop = Dropout.draw(0.0, 0.5, gens, B, [x.shape[-1], *ARCH.hidden], p_conv=(0.75, 0.25))
    p = net.forward(x, drop)
    assert 0.6 < (p.masks[0] == 0).double().mean() < 0.9 and 0.1 < (p.masks[1] == 0).double().mean() < 0.4
    assert torch.equal(p.hs[1] == 0, p.masks[0] == 0)
    dh = torch.randn(S, B, ARCH.hidden[0], dtype=torch.float64)
    delta = net.local(p, 0, dh)
    # a dropped pooled unit sends nothing back: zero the signal there and nothing changes
    kept = dh * (p.masks[0] != 0).reshape(B, S, -1).transpose(0, 1)
    torch.testing.assert_close(net.local(p, 0, kept), delta)


def image_data(n: int = 96, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(3, 288, generator=g)
    y = torch.randint(3, (n,), generator=g)
    x = (protos[y] + 0.2 * torch.randn(n, 288, generator=g)).clamp(0, 1)
    return Data(x, y, x[:32], y[:32], shape=ARCH.in_shape)


@pytest.mark.parametrize("method,dropout", [("bp", False), ("dfa", False), ("dfa", True)])
def test_conv_stacked_seeds_equal_single_seed(method, dropout):
    """Dropout too: each seed's masks come from its own generator, whatever channel group it is."""
    data = image_data()
    protocol = Protocol(1e-3, 16, 1, p_input=0.1 * dropout, p_hidden=0.5 * dropout,
                        p_conv=(0.25, 0.5) if dropout else ())
    stacked, alone = assert_stack_trains_as_alone(ARCH, method, data, protocol, epochs=2)
    torch.testing.assert_close(errors_on(stacked.net, data.x_test, data.y_test)[1:2],
                               errors_on(alone.net, data.x_test, data.y_test))


def test_conv_state_round_trips_through_a_checkpoint(tmp_path):
    state = init_state([0, 1], ARCH, "tanh", RULES["fa"], CPU)
    train_epoch(state, image_data(), RULES["fa"], Protocol(1e-3, 32, 1))
    torch.save(state.to_dict(), tmp_path / "ckpt.pt")
    back = State.from_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True), CPU)
    assert isinstance(back.net, ConvNet) and back.net.arch == ARCH
    for a, b in zip(state.net.params + state.feedback + state.sq_avg, back.net.params + back.feedback + back.sq_avg):
        assert torch.equal(a, b)


# --- through the runner: config, whitening, learning ------------------------------------------

# conv_tanh's blocks, shrunk: 3x16x16 images pool to 7x7 and 3x3 (the full net: results/README.md)
CONV_TINY = ["model=conv_tanh", "model.channels=[8,8]", "model.width=32", "dataset.features=768",
             "dataset.shape=[3,16,16]", "dataset.train_size=600", "dataset.test_size=100", "seeds=[0]",
             "dataset.classes=3", "batch_size=16"]


@pytest.mark.parametrize("method", ["bp", "fa", "dfa"])
def test_conv_learns_on_image_shaped_synthetic_data(make_cfg, method):
    """Whitened (the conv default), zero init for FA and DFA: well below chance (66.7%) in 8 epochs.
    (With 10 classes the tiny net sits at the class priors for longer than a test should wait.)"""
    from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records
    records = run(make_cfg(*CONV_TINY, f"method={method}", "max_epochs=8"))
    for rec in records:
        assert rec["row"] == "CONV Tanh" and rec["config"]["whiten"] is None
        assert rec["train_error"] < 35, [round(h["train_error"], 1) for h in rec["history"]]
    assert len(records) == 1  # one seed: a rule that does not learn fails on any seed


def test_dropout_after_the_conv_blocks_alone_is_dropout(make_cfg, tmp_path):
    """reg.p_conv with p_input = p_hidden = 0 still drops (it once trained as if no dropout);
    an MLP ignores p_conv, so reg=dropout on an MLP trains as its p_input and p_hidden say."""
    from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records
    tiny = [*CONV_TINY, "max_epochs=1", "seeds=[0]", "dataset.train_size=96", "dataset.test_size=32"]
    plain = run(make_cfg(*tiny, f"store={tmp_path / 'plain'}"))[0]
    conv_only = run(make_cfg(*tiny, "reg=dropout", "reg.p_input=0", "reg.p_hidden=0", "reg.p_conv=[0.25,0.5]",
                                  f"store={tmp_path / 'conv'}"))[0]
    assert conv_only["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    timeless = lambda rec: [{k: v for k, v in h.items() if k != "seconds"} for h in rec["history"]]
    mlp = ["max_epochs=1", "reg=dropout"]
    with_p_conv, without = (run(make_cfg(*mlp, *extra, f"store={tmp_path / name}"))[0]
                            for name, extra in (("a", []), ("b", ["reg.p_conv=[]"])))
    assert timeless(with_p_conv) == timeless(without)


def test_conv_whitens_by_default_and_mlps_do_not(make_cfg, monkeypatch):
    import dfarun.run.runner as runner
    calls = []
    monkeypatch.setattr(runner, "whiten", lambda data, *a: (calls.append(a), data)[1])
    runner.run(make_cfg(*CONV_TINY, "max_epochs=1", "seeds=[0]"))
    assert len(calls) == 1 and calls[0][1] is None  # synthetic: fitted in memory, not cached
    runner.run(make_cfg("max_epochs=1"))
    runner.run(make_cfg(*CONV_TINY, "max_epochs=1", "seeds=[1]", "whiten=false"))
    assert len(calls) == 1
    runner.run(make_cfg("max_epochs=1", "whiten=true", "seeds=[2]"))
    assert len(calls) == 2


@pytest.mark.parametrize("overrides, key", [
    (["method=ifa"], "method.name"),
    (["dataset.shape=[3,16,15]"], "dataset.shape"),
    (["model.channels=[8,8,8,8]"], "model.channels"),
    (["model.kernel=4"], "model.kernel"),
    (["reg=dropout"], "reg.p_conv"),  # three probabilities for two blocks
    (["dataset.shape=null"], "dataset.shape"),
])
def test_conv_config_errors_name_the_key(make_cfg, overrides, key):
    from dfarun.errors import ConfigError
    from dfarun.config.checks import validate
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate(make_cfg(*CONV_TINY, *overrides))


def test_conv_saved_weights_carry_the_shape(make_cfg, tmp_path):
    from dfarun.run.runner import run_records as run  # run(cfg) returns the metric; these read records
    run(make_cfg(*CONV_TINY, "max_epochs=1", "seeds=[0]", "save_weights=true"))
    (path,) = (tmp_path / "runs").glob("*_seed0.pt")
    saved = torch.load(path, weights_only=True)
    assert saved["arch"]["channels"] == (8, 8) and saved["arch"]["in_shape"] == (3, 16, 16)
    assert saved["weights"][0].shape == (8, 3, 5, 5) and saved["activation"] == "tanh"
    net = ConvNet([w[None] for w in saved["weights"]], [b[None] for b in saved["biases"]], saved["activation"],
                  ConvArch(**saved["arch"]))
    assert net.forward(torch.rand(4, 768)).a_y.shape == (1, 4, 3)
