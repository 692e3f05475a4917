"""Learning rules: how the output error e reaches the hidden layers.

A rule is three things, and this file is the only place they are written:
  signals(e, dfs, W, B) -> [δh_1, ..., δh_L]  what reaches each hidden layer's output h_i
  feedback(W, classes, gen) -> [B_i]          its fixed feedback matrices, for one seed
  zero_init                                   start forward weights at zero (tanh/logistic)

δh_i stands where back-propagation's gradient with respect to h_i would (REFERENCE.md: the
feedback "replaces the gradient with respect to the hidden layer's output"). The caller then
applies the local step, δa_i = δh_i ⊙ f'(a_i) (times the dropout mask), and eq. (10) turns
δa into weight updates identically for every rule (train.updates, nets.weight_updates); the
output layer always learns from e. Rules that chain layers (BP, FA, IFA) form δa internally.

Notation follows nets.py (row vectors, leading seed dim): e [S, B, C] = sigmoid(a_y) - y,
dfs[i] = f'(a_{i+1}) [S, B, n], W = the forward weights W_1..W_{L+1}. Feedback matrices are
stored in the orientation they are multiplied in, δh = (signal) @ B, so B for FA has W's own
shape and `fa` with B_i = W_{i+1} *is* `bp`.

To add a rule: write its `signals` (and `feedback` if it has its own matrices), add one
entry to RULES, and a one-line conf/method/<name>.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .nets import uniform


# --- signals into the hidden layers -------------------------------------------------------

def _backward_chain(e: Tensor, dfs: list[Tensor], mats: list[Tensor]) -> list[Tensor]:
    """δh_i = δa_{i+1} M_{i+1} with δa_{i+1} = δh_{i+1} ⊙ f'(a_{i+1}), from the top down."""
    signals, d = [], e
    for M, df in zip(reversed(mats), reversed(dfs)):
        signals.append(torch.bmm(d, M))
        d = signals[-1] * df
    return signals[::-1]


def bp(e, dfs, W, B):
    """Eq. (6): back-propagate through the transposed forward weights."""
    return _backward_chain(e, dfs, W[1:])


def fa(e, dfs, W, B):
    """Eq. (7): back-propagate layer by layer through fixed random matrices."""
    return _backward_chain(e, dfs, B)


def dfa(e, dfs, W, B):
    """Eq. (8): every hidden layer gets the output error directly, δh_i = e B_i."""
    return [torch.bmm(e, Bi) for Bi in B]


def ifa(e, dfs, W, B):
    """Eq. (9): e reaches the first hidden layer only, δh_1 = e B_1; the layers above get the
    first layer's direction propagated forward, δh_i = δa_{i-1} W_iᵀ."""
    signals = [torch.bmm(e, B[0])]
    for Wi, df in zip(W[1:-1], dfs):
        signals.append(torch.bmm(signals[-1] * df, Wi.transpose(1, 2)))
    return signals


def dfa_first(e, dfs, W, B):
    """Figure 2 (left): back-propagation for every hidden layer but the first, which gets
    the output error directly, δh_1 = e B_1."""
    return [torch.bmm(e, B[0])] + bp(e, dfs, W, B)[1:]


# --- feedback matrices (one seed; uniform ±1/sqrt(n), n = units receiving the feedback) --

def no_feedback(W: list[Tensor], classes: int, gen: torch.Generator) -> list[Tensor]:
    return []


def copy_of_forward(W: list[Tensor], classes: int, gen: torch.Generator) -> list[Tensor]:
    """FA: B_i is W_{i+1} as first sampled (±1/sqrt(fan_in), fan_in = n_i receives), before zeroing."""
    return [w.clone() for w in W[1:]]


def _random(classes: int, n: int, gen: torch.Generator) -> Tensor:
    return uniform((classes, n), n ** -0.5, gen)


def direct(W: list[Tensor], classes: int, gen: torch.Generator) -> list[Tensor]:
    """DFA: one independent [classes, n_i] matrix per hidden layer (W_i has n_i rows)."""
    return [_random(classes, w.shape[0], gen) for w in W[:-1]]


def first_layer_only(W: list[Tensor], classes: int, gen: torch.Generator) -> list[Tensor]:
    """IFA: a single [classes, n_1] matrix into the first hidden layer."""
    return [_random(classes, W[0].shape[0], gen)]


# --- registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    signals: Callable[[Tensor, list[Tensor], list[Tensor], list[Tensor]], list[Tensor]]
    feedback: Callable[[list[Tensor], int, torch.Generator], list[Tensor]]
    zero_init: bool  # the paper's FA/DFA start from zero weights where the activation allows


RULES: dict[str, Rule] = {
    "bp": Rule(bp, no_feedback, zero_init=False),
    "fa": Rule(fa, copy_of_forward, zero_init=True),
    "dfa": Rule(dfa, direct, zero_init=True),
    # IFA's upper layers learn only through W_i (eq. 9): zero weights would never move,
    # and the paper reports IFA "starting from a random initialization".
    "ifa": Rule(ifa, first_layer_only, zero_init=False),
    "dfa_first": Rule(dfa_first, first_layer_only, zero_init=False),
}
