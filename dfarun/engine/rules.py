"""Learning rules: how the output error e reaches the hidden layers.

A rule is three things, and this file is the only place they are written:
  signals(e, net, p, B) -> [δh_1, ..., δh_L]   what reaches each hidden layer's output h_i
  feedback(W, hidden, classes, gen) -> [B_i]   its fixed feedback matrices, for one seed
  zero_init, mlp_first_random                  which forward weights start at zero (tanh/logistic)

δh_i stands where back-propagation's gradient with respect to h_i would (docs/protocol.md: the
feedback "replaces the gradient with respect to the hidden layer's output"; in the conv net,
h_i of a conv block is its max-pooled output). The network then applies its local step,
δa_i = net.local(p, i, δh_i) (δh ⊙ f'(a), through the pooling and dropout mask where there are
any), and net.weight_updates applies eq. (10) identically for every rule; the output layer
always learns from e. Rules that chain layers (BP, FA, IFA) use the network's own steps,
net.back (through a layer's input side, with any matrix in place of its weights) and net.push,
so the same rule trains an MLP and a conv net (nets.MLP lists the interface).

Notation (row vectors, leading seed dim): e [S, B, C] = sigmoid(a_y) - y, p = net.forward(x),
W = net.weights, signals δh [S, B, n]. Feedback matrices are stored in the orientation they
are multiplied in, δh = (signal) @ B, so B for FA has W's own shape and `fa` with
B_i = W_{i+1} *is* `bp`.

To add a rule: write its `signals` (and `feedback` if it has its own matrices), add one
entry to RULES, and a conf/method/<name>.yaml that says `name: <name>`. That is all the code:
`method=<name>` trains it, on an MLP or (with conv=True) the conv net, compiled or not;
config checks and `dfarun-tables` (a column of its own on the paper's rows, beside BP/FA/DFA)
pick it up. In words, the README's `method`
line and docs/protocol.md's per-rule tables (signal, init, feedback) describe each rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dfarun.engine.hyp import HYP
from dfarun.engine.nets import uniform

FEEDBACK_POWER = HYP["init"]["feedback"].value  # feedback bound = n ** FEEDBACK_POWER (-0.5), n units receiving


# --- signals into the hidden layers -------------------------------------------------------

def _backward_chain(e: Tensor, net, p, mats: list[Tensor]) -> list[Tensor]:
    """δh_k = back_{k+1}(δa_{k+1}, M_{k+1}) with δa_{k+1} = local(δh_{k+1}), from the top down."""
    signals, d = [], e
    for k in reversed(range(len(mats))):
        signals.append(net.back(k + 1, d, mats[k]))
        d = net.local(p, k, signals[-1])
    return signals[::-1]


def bp(e, net, p, B):
    """Eq. (6): back-propagate through the transposed forward weights."""
    return _backward_chain(e, net, p, net.weights[1:])


def fa(e, net, p, B):
    """Eq. (7): back-propagate layer by layer through fixed random matrices."""
    return _backward_chain(e, net, p, B)


def dfa(e, net, p, B):
    """Eq. (8): every hidden layer gets the output error directly, δh_i = e B_i."""
    return [torch.bmm(e, Bi) for Bi in B]


def ifa(e, net, p, B):
    """Eq. (9): e reaches the first hidden layer only, δh_1 = e B_1; the layers above get the
    first layer's direction propagated forward, δh_i = δa_{i-1} W_iᵀ."""
    signals = [torch.bmm(e, B[0])]
    for k in range(1, len(net.weights) - 1):
        signals.append(net.push(k, net.local(p, k - 1, signals[-1])))
    return signals


def dfa_first(e, net, p, B):
    """Figure 2 (left): back-propagation for every hidden layer but the first, which gets
    the output error directly, δh_1 = e B_1."""
    return [torch.bmm(e, B[0])] + bp(e, net, p, B)[1:]


# --- feedback matrices (one seed; uniform ±1/sqrt(n), n = units receiving the feedback) --

def no_feedback(W: list[Tensor], hidden: list[int], classes: int, gen: torch.Generator) -> list[Tensor]:
    return []


def copy_of_forward(W: list[Tensor], hidden: list[int], classes: int, gen: torch.Generator) -> list[Tensor]:
    """FA: B_i is W_{i+1} as first sampled (±1/sqrt(fan_in), fan_in = n_i receives), before zeroing.
    In a conv net these are the kernels, used by the same transposed convolution as BP's."""
    return [w.clone() for w in W[1:]]


def _random(classes: int, n: int, gen: torch.Generator) -> Tensor:
    return uniform((classes, n), n ** FEEDBACK_POWER, gen)


def direct(W: list[Tensor], hidden: list[int], classes: int, gen: torch.Generator) -> list[Tensor]:
    """DFA: one independent dense [classes, n_i] matrix per hidden layer; for a conv block
    n_i = C*H*W of its pooled output."""
    return [_random(classes, n, gen) for n in hidden]


def first_layer_only(W: list[Tensor], hidden: list[int], classes: int, gen: torch.Generator) -> list[Tensor]:
    """IFA: a single [classes, n_1] matrix into the first hidden layer."""
    return [_random(classes, hidden[0], gen)]


# --- registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    signals: Callable[[Tensor, Any, Any, list[Tensor]], list[Tensor]]
    feedback: Callable[[list[Tensor], list[int], int, torch.Generator], list[Tensor]]
    zero_init: bool  # the paper's FA/DFA start from zero weights where the activation allows
    # ...except an MLP's first layer: in the author's FA MLPs it is a plain linear layer (it
    # carries no feedback matrix) and keeps its uniform init; FA conv nets zero every layer.
    mlp_first_random: bool = False
    conv: bool = True  # also defined for conv nets (IFA's forward push is MLP-only)


RULES: dict[str, Rule] = {
    "bp": Rule(bp, no_feedback, zero_init=False),
    "fa": Rule(fa, copy_of_forward, zero_init=True, mlp_first_random=True),
    "dfa": Rule(dfa, direct, zero_init=True),
    # IFA's upper layers learn only through W_i (eq. 9): zero weights would never move,
    # and the paper reports IFA "starting from a random initialization".
    "ifa": Rule(ifa, first_layer_only, zero_init=False, conv=False),
    "dfa_first": Rule(dfa_first, first_layer_only, zero_init=False),
}
