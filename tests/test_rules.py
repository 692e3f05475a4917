"""The load-bearing checks: each rule's update against autograd and against the paper's equations."""
from __future__ import annotations

import pytest
import torch

from dfarun.engine.nets import ACTIVATIONS, MLP, layer_sizes, sample_layers
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import bce, updates


@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons in double precision; training itself runs in float32."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


S, B, D, C = 3, 5, 7, 4  # seeds, batch, inputs, classes


def random_net(activation: str, depth: int = 3, width: int = 6) -> MLP:
    sizes = layer_sizes(D, depth, width, C)
    per_seed = [sample_layers(sizes, torch.Generator().manual_seed(s)) for s in range(S)]
    stack = lambda i: [torch.stack(ts).double() for ts in zip(*(p[i] for p in per_seed))]
    return MLP(stack(0), stack(1), activation)


def batch():
    x = torch.rand(S, B, D)
    target = torch.eye(C)[torch.randint(C, (S, B))]
    return x, target


def feedback(rule: str, net: MLP) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    per_seed = [RULES[rule].feedback([w[s].float() for w in net.weights], net.hidden, C, gen) for s in range(S)]
    return [torch.stack(ts).double() for ts in zip(*per_seed)]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("depth", [1, 3])
def test_bp_equals_autograd_of_summed_bce(activation, depth):
    net = random_net(activation, depth)
    x, target = batch()
    ours, _ = updates(net, [], RULES["bp"], x, target)
    params = [p.clone().requires_grad_() for p in net.params]
    L = depth + 1
    ref = MLP(params[:L], params[L:], activation)
    a_y = ref.forward(x).a_y
    grads = torch.autograd.grad(bce(a_y, target).sum(), params)
    assert len(ours) == len(grads) == 2 * L
    for g_ours, g_ref in zip(ours, grads):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_fa_with_forward_weights_as_feedback_is_bp(activation):
    net = random_net(activation)
    x, target = batch()
    fa, _ = updates(net, net.weights[1:], RULES["fa"], x, target)
    bp, _ = updates(net, [], RULES["bp"], x, target)
    for a, b in zip(fa, bp):
        torch.testing.assert_close(a, b)


def test_one_hidden_layer_fa_equals_dfa_with_the_same_b():
    net = random_net("tanh", depth=1)
    x, target = batch()
    B = [torch.rand(S, C, 6) - 0.5]
    fa, _ = updates(net, B, RULES["fa"], x, target)
    dfa, _ = updates(net, B, RULES["dfa"], x, target)
    for a, b in zip(fa, dfa):
        torch.testing.assert_close(a, b)


def test_dfa_deltas_are_e_times_b_times_fprime():
    net = random_net("tanh")
    x, target = batch()
    B = feedback("dfa", net)
    p = net.forward(x)
    hs, a_y = p.hs, p.a_y
    e = torch.sigmoid(a_y) - target
    dfs = [1 - h**2 for h in hs[1:]]
    signals = RULES["dfa"].signals(e, net, p, B)
    for s, Bi in zip(signals, B):  # the feedback replaces the gradient with respect to h_i
        torch.testing.assert_close(s, torch.einsum("sbc,scn->sbn", e, Bi))
    deltas = [s * df for s, df in zip(signals, dfs)]
    for i, d in enumerate(deltas):
        expect = torch.einsum("sbc,scn->sbn", e, B[i]) * (1 - torch.tanh(
            torch.einsum("sbd,snd->sbn", hs[i], net.weights[i]) + net.biases[i][:, None]) ** 2)
        torch.testing.assert_close(d, expect)
    # and eq. (10) with them: dW_i = δa_iᵀ h_{i-1}
    grads, _ = updates(net, B, RULES["dfa"], x, target)
    for i, d in enumerate(deltas):
        torch.testing.assert_close(grads[i], torch.einsum("sbn,sbd->snd", d, hs[i]))
    torch.testing.assert_close(grads[len(deltas)], torch.einsum("sbc,sbd->scd", e, hs[-1]))


def test_ifa_follows_equation_9():
    net = random_net("tanh", depth=3)
    x, target = batch()
    B = feedback("ifa", net)
    assert len(B) == 1 and B[0].shape == (S, C, 6)
    p = net.forward(x)
    e = torch.sigmoid(p.a_y) - target
    dfs = [1 - h**2 for h in p.hs[1:]]
    deltas = [s * df for s, df in zip(RULES["ifa"].signals(e, net, p, B), dfs)]
    d1 = (e @ B[0]) * dfs[0]
    d2 = torch.einsum("snm,sbm->sbn", net.weights[1], d1) * dfs[1]  # (W_2 δa_1) ⊙ f'(a_2)
    d3 = torch.einsum("snm,sbm->sbn", net.weights[2], d2) * dfs[2]
    for got, want in zip(deltas, [d1, d2, d3]):
        torch.testing.assert_close(got, want)


# --- initialisation ------------------------------------------------------------------------

# zeroed: which layers start at zero (weights and biases); the rest are uniform ±1/sqrt(fan_in).
# FA MLPs keep the first layer random: in the author's code it carries no feedback matrix.
@pytest.mark.parametrize("method,activation,zeroed", [
    ("bp", "tanh", ()), ("fa", "tanh", (1, 2)), ("dfa", "tanh", (0, 1, 2)),
    ("dfa", "logistic", (0, 1, 2)), ("fa", "logistic", (1, 2)), ("dfa", "relu", ()),
    ("fa", "relu", ()), ("ifa", "tanh", ())])
def test_forward_init(method, activation, zeroed):
    sizes = [100, 50, 50, 10]
    state = init_state([0, 1], sizes, activation, RULES[method], torch.device("cpu"))
    bp = init_state([0, 1], sizes, activation, RULES["bp"], torch.device("cpu"))
    for k, (w, b, fan_in) in enumerate(zip(state.net.weights, state.net.biases, sizes[:-1])):
        if k in zeroed:
            assert torch.count_nonzero(w) == 0 and torch.count_nonzero(b) == 0
        else:
            assert w.abs().max() <= fan_in ** -0.5
            assert w.abs().max() > 0.9 * fan_in ** -0.5  # uniform over the whole range
            assert torch.count_nonzero(b) == b.numel()
            torch.testing.assert_close(w, bp.net.weights[k])  # the same draws as BP's init


def test_feedback_shapes_and_scales():
    sizes = [100, 50, 30, 10]  # fan-out (receiving layer) differs per layer
    dev = torch.device("cpu")
    dfa = init_state([0], sizes, "tanh", RULES["dfa"], dev).feedback
    assert [tuple(b.shape) for b in dfa] == [(1, 10, 50), (1, 10, 30)]
    for b, n in zip(dfa, [50, 30]):
        assert b.abs().max() <= n ** -0.5 and b.abs().max() > 0.9 * n ** -0.5
    # FA: the forward weights as first sampled (same draws as BP's init), before zeroing
    fa = init_state([0], sizes, "tanh", RULES["fa"], dev).feedback
    bp = init_state([0], sizes, "tanh", RULES["bp"], dev)
    assert len(fa) == 2
    for b, w in zip(fa, bp.net.weights[1:]):
        torch.testing.assert_close(b, w)
    ifa = init_state([0], sizes, "tanh", RULES["ifa"], dev).feedback
    assert [tuple(b.shape) for b in ifa] == [(1, 10, 50)]
    assert init_state([0], sizes, "tanh", RULES["bp"], dev).feedback == []


def test_seeds_draw_different_weights_and_feedback():
    state = init_state([0, 1], [20, 8, 3], "tanh", RULES["dfa"], torch.device("cpu"))
    assert not torch.equal(state.feedback[0][0], state.feedback[0][1])


# --- alignment with back-propagation (Theorem 1) ----------------------------------------------

def test_alignment_angles_bp_and_fa_with_w_are_zero():
    from dfarun.engine.step import alignment
    net = random_net("tanh")
    x, target = batch()
    for rule, B in (("bp", []), ("fa", net.weights[1:])):
        signal, update = alignment(net, B, RULES[rule], x, target)
        assert signal.shape == update.shape == (3, S)  # hidden layers x seeds
        torch.testing.assert_close(signal, torch.zeros_like(signal), atol=1e-4, rtol=0)
        torch.testing.assert_close(update, torch.zeros_like(update), atol=1e-4, rtol=0)


def test_alignment_angle_of_dfa_by_hand():
    from dfarun.engine.step import alignment
    net = random_net("tanh", depth=1)  # one hidden layer: c_1 = e W_2, DFA's δh_1 = e B_1
    x, target = batch()
    B = [torch.rand(S, C, 6) - 0.5]
    signal, update = alignment(net, B, RULES["dfa"], x, target)
    hs, dfs, a_y = net.forward(x)
    e = torch.sigmoid(a_y) - target
    for s in range(S):
        ours, true = (e[s] @ B[0][s]).flatten(), (e[s] @ net.weights[1][s]).flatten()
        cos = ours @ true / (ours.norm() * true.norm())
        assert signal[0, s].item() == pytest.approx(torch.rad2deg(torch.acos(cos)).item(), abs=1e-6)
        dw_ours = ((e[s] @ B[0][s]) * dfs[0][s]).T @ hs[0][s]
        dw_true = ((e[s] @ net.weights[1][s]) * dfs[0][s]).T @ hs[0][s]
        cos = (dw_ours * dw_true).sum() / (dw_ours.norm() * dw_true.norm())
        assert update[0, s].item() == pytest.approx(torch.rad2deg(torch.acos(cos)).item(), abs=1e-6)
    # a feedback matrix pointing against W_2 gives 180 degrees
    signal, _ = alignment(net, [-net.weights[1]], RULES["dfa"], x, target)
    torch.testing.assert_close(signal, torch.full_like(signal, 180.0), atol=1e-3, rtol=0)


def test_alignment_is_undefined_while_bp_sends_nothing():
    from dfarun.engine.step import alignment
    net = random_net("tanh", depth=2)
    for w in net.weights[1:]:
        w.zero_()  # zero upper weights: back-propagation carries no signal down
    x, target = batch()
    signal, update = alignment(net, feedback("dfa", net), RULES["dfa"], x, target)
    assert torch.isnan(signal).all() and torch.isnan(update).all()


class _AuthorFALinear(torch.autograd.Function):
    """The author's FA layer (`Models/Linear.lua`), written independently of dfarun: the
    forward is x Wᵀ + b; the backward sends the output gradient through the layer's own fixed
    feedback matrix (its weights as first sampled) and computes its weight and bias gradients
    as BP would."""

    @staticmethod
    def forward(ctx, x, W, b, feedback):
        ctx.save_for_backward(x, feedback)
        return x @ W.T + b

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        return g @ feedback, g.T @ x, g.sum(0), None


def test_fa_trains_like_the_authors_fa_layers_with_torch_rmsprop():
    """dfarun's FA (init_state + sgd_step) against the author's module stack (`Models/mlp.lua`):
    the first layer a plain linear layer with its uniform init, every layer above it an FA layer
    zeroed after its feedback copy was taken, the summed error sigmoid(a) - onehot, and
    torch.optim.RMSprop. Square hidden layers, so a transposed feedback would not fail on shape."""
    from dfarun.engine.step import RMSPROP_DECAY, RMSPROP_EPS, sgd_step

    sizes, seed, lr, steps = [D, 6, 6, 6, C], 3, 1e-2, 40
    ours = init_state([seed], sizes, "tanh", RULES["fa"], torch.device("cpu"))
    W, b = sample_layers(sizes, torch.Generator().manual_seed(seed))
    feedback = [w.clone() for w in W]
    for t in [*W[1:], *b[1:]]:
        t.zero_()
    params = [t.requires_grad_() for t in W + b]
    opt = torch.optim.RMSprop(params, lr=lr, alpha=RMSPROP_DECAY, eps=RMSPROP_EPS)
    gen = torch.Generator().manual_seed(0)
    x_all, y_all, eye = torch.rand(40, D, generator=gen), torch.randint(C, (40,), generator=gen), torch.eye(C)
    for _ in range(steps):
        idx = torch.randint(40, (1, 8), generator=gen)
        h = torch.tanh(torch.nn.functional.linear(x_all[idx[0]], W[0], b[0]))
        for k in range(1, len(W) - 1):
            h = torch.tanh(_AuthorFALinear.apply(h, W[k], b[k], feedback[k]))
        a = _AuthorFALinear.apply(h, W[-1], b[-1], feedback[-1])
        opt.zero_grad()
        a.backward(torch.sigmoid(a) - eye[y_all[idx[0]]])
        opt.step()
        sgd_step(ours.net, ours.feedback, ours.sq_avg, RULES["fa"], x_all, y_all, idx, eye,
                 torch.tensor([lr]), None, 0.0, (), torch.zeros(1), torch.zeros(1))
    for theirs, mine in zip(params, ours.net.params):
        torch.testing.assert_close(mine[0], theirs.detach(), rtol=1e-9, atol=1e-12)
    assert all(w.abs().max() > 0.01 for w in W[1:])  # the zeroed layers learned: not two idle nets agreeing
