"""Regularisers: dropout, fast-gradient-sign training and the paper's regularised grid rows
(docs/protocol.md, "Regularisers").

Unit tests work on hand-built nets and `toy_data`; the end-to-end ones go through
`runner.run` on the tiny synthetic set of conftest.py with the small 3x50_tanh model.
"""
from __future__ import annotations

import math

import pytest
import torch

import dfarun.engine.step as step
import dfarun.engine.train as train
from dfarun.config.schema import epoch_limit
from dfarun.engine.nets import MLP, Dropout
from dfarun.engine.rules import RULES
from dfarun.config.schema import row_label
from dfarun.run.runner import run_records
from dfarun.engine.state import init_state
from dfarun.engine.train import Protocol

from helpers import CPU

SMALL = "model=3x50_tanh"


def twin_net(seeds: int, sizes: list[int], seed: int = 0) -> MLP:
    """A tanh net whose every seed has the same non-zero weights (so only dropout tells them apart)."""
    g = torch.Generator().manual_seed(seed)
    Ws, bs = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * fan_in ** -0.5
        b = (torch.rand(fan_out, generator=g) * 2 - 1) * fan_in ** -0.5
        Ws.append(W.expand(seeds, -1, -1).clone())
        bs.append(b.expand(seeds, -1).clone())
    return MLP(Ws, bs, "tanh")


def plain_forward(net: MLP, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Reference forward pass written out longhand: hidden outputs and a_y, no dropout."""
    hs, h = [], x
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        h = torch.tanh(h @ W.transpose(1, 2) + b.unsqueeze(1))
        hs.append(h)
    return hs, h @ net.weights[-1].transpose(1, 2) + net.biases[-1].unsqueeze(1)


# --- dropout ------------------------------------------------------------------------------

P_IN, P_HID = 0.1, 0.5


def gens_for(seeds: int, first: int) -> tuple[torch.Generator, ...]:
    """One dropout generator per seed, as State.noise holds them."""
    return tuple(torch.Generator().manual_seed(first + i) for i in range(seeds))


def drop(gens: tuple[torch.Generator, ...], x: torch.Tensor, net: MLP) -> Dropout:
    """One mini-batch's draws for x [S, B, D], as train_epoch makes them."""
    return Dropout.draw(P_IN, P_HID, gens, x.shape[1], [x.shape[2], *net.hidden])


def test_dropout_masks_fraction_scaling_and_per_seed_draws():
    S, B, D, H = 2, 64, 200, 500
    net = twin_net(S, [D, H, H, 10])
    x1 = torch.rand(B, D, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.1  # no zero pixels
    x = x1.expand(S, -1, -1).clone()
    gens = gens_for(S, 0)
    hs, dfs, a_y = net.forward(x, drop(gens, x, net))
    assert len(hs) == 3 and len(dfs) == 2 and a_y.shape == (S, B, 10)

    # input: ~10% zeroed, the rest scaled by 1/0.9
    in_kept = hs[0] != 0
    assert (~in_kept).float().mean().item() == pytest.approx(P_IN, abs=0.01)
    torch.testing.assert_close(hs[0][in_kept], (x / (1 - P_IN))[in_kept], rtol=1e-6, atol=0)

    # hidden: ~50% zeroed, kept units = tanh(a) / 0.5 where a comes from the masked layer below
    for i in (1, 2):
        W, b = net.weights[i - 1], net.biases[i - 1]
        h = torch.tanh(hs[i - 1] @ W.transpose(1, 2) + b.unsqueeze(1))   # before its mask
        assert (h != 0).all()                                             # so every zero is the mask's
        kept = hs[i] != 0
        assert (~kept).float().mean().item() == pytest.approx(P_HID, abs=0.01)
        torch.testing.assert_close(hs[i], h * kept / (1 - P_HID), rtol=1e-5, atol=1e-6)
        # dfs carry the same mask (and the same scale): f'(a) * mask
        torch.testing.assert_close(dfs[i - 1], (1 - h * h) * kept / (1 - P_HID), rtol=1e-5, atol=1e-6)

    # identical weights and inputs in both seeds, yet each seed draws its own masks
    assert not torch.equal(hs[0][0] != 0, hs[0][1] != 0)
    assert not torch.equal(hs[1][0] != 0, hs[1][1] != 0)
    # ... and different ones on every pass
    again = net.forward(x, drop(gens, x, net))
    assert not torch.equal(again.hs[1] != 0, hs[1] != 0)
    # ... reproducibly from the generator's seed
    replay = net.forward(x, drop(gens_for(S, 0), x, net))
    for a, b in zip(replay.hs, hs):
        assert torch.equal(a, b)
    # ... whose layers are masked independently
    assert not torch.equal(hs[1][0] != 0, hs[2][0] != 0)
    # ... and a seed's masks are its own generator's alone: the second seed, run by itself
    one = twin_net(1, [D, H, H, 10])
    alone = one.forward(x[1:], drop(gens_for(S, 0)[1:], x[1:], one))
    for a, b in zip(alone.hs, hs):
        assert torch.equal(a[0], b[1])


def test_evaluation_has_no_dropout_and_is_deterministic():
    net = twin_net(2, [30, 100, 100, 5])
    x = torch.rand(40, 30) * 0.9 + 0.1   # [B, D]: shared by the seeds, as errors_on passes it
    first, second = net.forward(x), net.forward(x)
    ref_hs, ref_ay = plain_forward(net, x)
    torch.testing.assert_close(first.a_y, ref_ay)
    assert torch.equal(first.a_y, second.a_y)
    for h, ref, df in zip(first.hs[1:], ref_hs, first.dfs):
        assert (h != 0).all()
        torch.testing.assert_close(h, ref)
        torch.testing.assert_close(df, 1 - ref * ref)   # no mask, no 1/(1-p)
    # errors_on (the evaluation the runner scores) sees the clean net too
    y = ref_ay.argmax(-1)[0]
    assert train.errors_on(net, x, y).tolist() == [0.0, 0.0]


def test_dfa_with_dropout_masks_the_feedback_before_it_enters():
    S, B, sizes = 2, 32, [20, 60, 60, 60, 4]
    net = twin_net(S, sizes, seed=3)
    feedback = init_state([5, 6], sizes, "tanh", RULES["dfa"], CPU).feedback
    x = torch.rand(S, B, 20) * 0.9 + 0.1
    target = torch.eye(4)[torch.randint(4, (S, B))]
    p = net.forward(x, drop(gens_for(S, 11), x, net))
    e = torch.sigmoid(p.a_y) - target
    deltas = [net.local(p, k, s) for k, s in enumerate(RULES["dfa"].signals(e, net, p, feedback))]
    assert len(deltas) == 3
    for i, (d, Bi) in enumerate(zip(deltas, feedback)):
        W, b = net.weights[i], net.biases[i]
        h = torch.tanh(p.hs[i] @ W.transpose(1, 2) + b.unsqueeze(1))   # unmasked h_{i+1}
        mask = (p.hs[i + 1] != 0).float() / (1 - P_HID)
        torch.testing.assert_close(d, (e @ Bi) * (1 - h * h) * mask)
        assert (d[p.hs[i + 1] == 0] == 0).all()    # a dropped unit learns nothing this step
        assert (d[p.hs[i + 1] != 0] != 0).any()

    # updates() uses the very masks of its own forward pass: dW_1 = δa_1ᵀ h_0 with the masked input
    grads, a_y = step.updates(net, feedback, RULES["dfa"], x, target, drop(gens_for(S, 11), x, net))
    torch.testing.assert_close(a_y, p.a_y)
    torch.testing.assert_close(grads[0], deltas[0].transpose(1, 2) @ p.hs[0])
    torch.testing.assert_close(grads[len(net.weights) - 1], e.transpose(1, 2) @ p.hs[-1])


# --- fast gradient sign -----------------------------------------------------------------------

def autograd_fgsm(net: MLP, x: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.clone().requires_grad_()
    loss = step.bce(net.forward(x).a_y, target).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert (grad != 0).float().mean() > 0.99    # the test would be vacuous with a dead gradient
    return (x + eps * grad.sign()).detach()


def test_fgsm_is_x_plus_eps_sign_of_the_true_input_gradient(toy_data):
    sizes = [12, 30, 30, 3]
    state = init_state([0, 1, 2], sizes, "tanh", RULES["bp"], CPU)   # uniform init: non-zero weights
    data = toy_data
    x = data.x_train[:50].expand(3, -1, -1).clone()
    target = torch.eye(3)[data.y_train[:50]].expand(3, -1, -1)
    for eps in (0.08, 0.3):
        got = step.fgsm(state.net, x, target, eps)
        want = autograd_fgsm(state.net, x, target, eps)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert ((got - x).abs() - eps).abs().max() < 1e-6   # every input moves by exactly eps
    # the seeds' nets differ, so do their perturbations
    assert not torch.equal(got[0], got[1])


def test_fgsm_in_training_uses_backprop_whatever_the_method(monkeypatch, toy_data):
    """train_epoch perturbs each batch with BP's input gradient: swapping in another rule's
    feedback matrices leaves the perturbed batch unchanged, and only that batch is trained on."""
    data = toy_data
    sizes = [12, 30, 30, 3]
    seen = {}
    real_fgsm, real_updates = step.fgsm, step.updates

    def spy_fgsm(net, x, target, eps):
        out = real_fgsm(net, x, target, eps)
        seen.setdefault("fgsm", []).append((x.clone(), target.clone(), out.clone(), eps))
        return out

    def spy_updates(net, feedback, rule, x, target, dropout=None):
        seen.setdefault("updates", []).append(x.clone())
        return real_updates(net, feedback, rule, x, target, dropout)

    monkeypatch.setattr(step, "fgsm", spy_fgsm)
    monkeypatch.setattr(step, "updates", spy_updates)
    perturbed = {}
    for method in ("bp", "fa", "dfa", "ifa"):
        seen.clear()
        state = init_state([0, 1], sizes, "tanh", RULES["bp"], CPU)       # same non-zero net
        state.feedback = init_state([0, 1], sizes, "tanh", RULES[method], CPU).feedback
        net0 = MLP([w.clone() for w in state.net.weights], [b.clone() for b in state.net.biases], "tanh")
        train.train_epoch(state, data, RULES[method], Protocol(1e-3, 64, 1, eps=0.08))
        assert len(seen["fgsm"]) == len(seen["updates"]) == 4     # 200 examples, batches of 64
        x_clean, target, x_adv, eps = seen["fgsm"][0]
        assert eps == 0.08
        torch.testing.assert_close(x_adv, autograd_fgsm(net0, x_clean, target, 0.08), rtol=0, atol=1e-6)
        for (_, _, out, _), trained in zip(seen["fgsm"], seen["updates"]):
            assert torch.equal(trained, out)                        # the perturbed batch only
        perturbed[method] = x_adv
    for method in ("fa", "dfa", "ifa"):
        assert torch.equal(perturbed[method], perturbed["bp"])


def test_adversarial_reg_trains_through_run_with_eps_008(make_cfg, monkeypatch):
    calls = []
    real = step.fgsm
    monkeypatch.setattr(step, "fgsm", lambda net, x, t, eps: (calls.append(eps), real(net, x, t, eps))[1])
    cfg = make_cfg(SMALL, "method=dfa", "reg=adversarial", "seeds=[0,1]")
    records = run_records(cfg)
    assert calls and set(calls) == {0.08}
    assert len(calls) == 2 * 4                  # every batch of 2 epochs x 256/64 batches
    for rec in records:
        assert rec["config"]["reg"] == {"name": "adversarial", "label": " + ADV",
                                        "p_input": 0.0, "p_hidden": 0.0, "p_conv": [], "eps": 0.08}
        assert rec["row"] == "3x50 Tanh + ADV"
        assert rec["stop"] == "max_epochs" and len(rec["history"]) == 2
        assert all(math.isfinite(h["train_loss"]) for h in rec["history"])


def test_dropout_reg_trains_through_run(make_cfg, monkeypatch):
    used = []
    real = step.updates
    monkeypatch.setattr(step, "updates",
                        lambda net, fb, rule, x, t, dropout=None: (used.append(dropout), real(net, fb, rule, x, t, dropout))[1])
    records = run_records(make_cfg(SMALL, "method=dfa", "reg=dropout"))
    assert used and all(d is not None and (d.p_input, d.p_hidden) == (0.1, 0.5) for d in used)
    assert records[0]["config"]["reg"]["p_hidden"] == 0.5
    assert records[0]["row"] == "3x50 Tanh + DO"


# --- the paper's grid rows --------------------------------------------------------------------

def test_dropout_row_sets_model_reg_and_the_schedule_chosen_on_validation(make_cfg):
    cfg = make_cfg("row=2x800_tanh_do")
    assert cfg.model.name == "2x800_tanh" and (cfg.model.depth, cfg.model.width) == (2, 800)
    assert cfg.model.activation == "tanh"
    assert cfg.reg.name == "dropout" and (cfg.reg.p_input, cfg.reg.p_hidden, cfg.reg.eps) == (0.1, 0.5, 0.0)
    # chosen on the validation split, then trained on all 60,000 as the author's code does
    assert cfg.val is False
    assert (cfg.lr, cfg.schedule, cfg.halve_every, cfg.train_epochs) == (1e-3, "step", 50, 150)
    # the row's training time under the default budget (300 epochs); profile=quick still caps it
    assert epoch_limit(make_cfg("row=2x800_tanh_do", tiny=False)) == 150
    assert epoch_limit(make_cfg("row=2x800_tanh_do", "profile=quick", tiny=False)) == 20
    assert row_label(cfg) == "2x800 Tanh + DO"


def test_train_epochs_ends_a_run_before_max_epochs(make_cfg):
    records = run_records(make_cfg(SMALL, "method=bp", "train_epochs=2", "max_epochs=5", "seeds=[0,1]"))
    assert [(r["epochs"], r["stop"]) for r in records] == [(2, "max_epochs")] * 2


def test_adversarial_row_sets_model_and_eps(make_cfg):
    cfg = make_cfg("row=2x800_tanh_adv")
    assert cfg.model.name == "2x800_tanh"
    assert cfg.reg.name == "adversarial" and cfg.reg.eps == 0.08
    assert (cfg.reg.p_input, cfg.reg.p_hidden) == (0.0, 0.0)
    assert cfg.val is False and cfg.schedule == "constant"
    assert row_label(cfg) == "2x800 Tanh + ADV"


def test_plain_row_has_no_regulariser(make_cfg):
    cfg = make_cfg("row=2x800_tanh")
    assert cfg.reg.name == "none" and row_label(cfg) == "2x800 Tanh"
    assert cfg.val is False and cfg.schedule == "constant"
