"""Training: every seed of one configuration in one stacked pass (protocol of REFERENCE.md).

Each seed owns its init, feedback matrices and data order, all drawn from generators seeded
by that seed alone, and every tensor op is batched over the leading seed dimension, so a
seed follows the same trajectory alone or stacked with others. A seed that converges or
diverges is final at that epoch and is dropped from the stack; the others go on.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Data
from .nets import ACTIVATIONS, MLP, sample_layers, weight_updates
from .rules import RULES, Rule

log = logging.getLogger("dfarun")

RMSPROP_DECAY = 0.99   # running average of squared updates (author's value = torch default)
RMSPROP_EPS = 1e-8     # added after the square root, as torch.optim.RMSprop does
AVG_START = 1.0        # moving average of the training error (fraction) starts at 100%
AVG_KEEP = 0.75        # m <- 0.75 m + 0.25 err_epoch (author's stopping rule)
STOP_AT = 1e-4         # converged when m <= 0.01% (as a fraction)
EVAL_CHUNK = 2000      # test examples per forward pass (bounds memory at S x 2000 x width)
DATA_ORDER_OFFSET = 2**32  # data-order generator seed = seed + offset: disjoint from init streams


# --- state ---------------------------------------------------------------------------------

@dataclass
class State:
    seeds: list[int]
    net: MLP
    feedback: list[Tensor]            # the rule's fixed matrices, [S, ...] each
    sq_avg: list[Tensor]              # RMSprop state, aligned with net.params
    data_order: list[torch.Generator]  # one per seed, CPU

    def select(self, keep: list[int]) -> State:
        idx = torch.tensor(keep, device=self.net.weights[0].device)
        return State([self.seeds[i] for i in keep], self.net.select(idx),
                     [b[idx] for b in self.feedback], [v[idx] for v in self.sq_avg],
                     [self.data_order[i] for i in keep])


def init_state(seeds: list[int], sizes: list[int], activation: str, rule: Rule,
               device: torch.device) -> State:
    """Sample each seed on the CPU from its own generator, then stack and move once."""
    zero = rule.zero_init and ACTIVATIONS[activation].zero_init_ok
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        W, b = sample_layers(sizes, gen)
        B = rule.feedback(W, sizes[-1], gen)  # FA copies W here, before it is zeroed
        if zero:
            W, b = [torch.zeros_like(t) for t in W], [torch.zeros_like(t) for t in b]
        per_seed.append((W, b, B))

    def stack(i: int) -> list[Tensor]:
        return [torch.stack(ts).to(device) for ts in zip(*(p[i] for p in per_seed))]

    net = MLP(stack(0), stack(1), activation)
    return State(list(seeds), net, stack(2), [torch.zeros_like(p) for p in net.params],
                 [torch.Generator().manual_seed(s + DATA_ORDER_OFFSET) for s in seeds])


# --- one step ------------------------------------------------------------------------------

def updates(net: MLP, feedback: list[Tensor], rule: Rule, x: Tensor, target: Tensor
            ) -> tuple[list[Tensor], Tensor]:
    """Gradients for every parameter (order of net.params) and the output pre-activation.

    The error e = sigmoid(a_y) - target is summed over the batch, as in the author's code:
    for BP this is exactly the gradient of the summed binary cross-entropy."""
    hs, a_y = net.forward(x)
    e = torch.sigmoid(a_y) - target
    df = ACTIVATIONS[net.activation].df
    deltas = rule.deltas(e, [df(h) for h in hs[1:]], net.weights, feedback)
    return weight_updates(hs, deltas + [e]), a_y


def rmsprop_(params: list[Tensor], grads: list[Tensor], sq_avg: list[Tensor], lr: float) -> None:
    """torch.optim.RMSprop(alpha=0.99, eps=1e-8), no momentum, element-wise so seeds never mix."""
    for p, g, v in zip(params, grads, sq_avg):
        v.mul_(RMSPROP_DECAY).addcmul_(g, g, value=1 - RMSPROP_DECAY)
        p.addcdiv_(g, v.sqrt().add_(RMSPROP_EPS), value=-lr)


def bce(a_y: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of logistic outputs, summed over outputs and batch: [S]."""
    return (F.softplus(a_y) - target * a_y).sum((1, 2))


# --- epochs --------------------------------------------------------------------------------

def train_epoch(state: State, data: Data, rule: Rule, lr: float, batch_size: int
                ) -> tuple[Tensor, Tensor]:
    """One reshuffled pass; returns per-seed (misclassified count, summed loss) as trained."""
    device = data.x_train.device
    n = data.x_train.shape[0]
    order = torch.stack([torch.randperm(n, generator=g) for g in state.data_order]).to(device)
    eye = torch.eye(state.net.weights[-1].shape[1], device=device)  # one-hot targets, C x C
    errors = torch.zeros(len(state.seeds), device=device)
    loss = torch.zeros(len(state.seeds), device=device)
    for start in range(0, n, batch_size):  # the last batch may be short
        idx = order[:, start:start + batch_size]
        y = data.y_train[idx]
        target = eye[y]
        grads, a_y = updates(state.net, state.feedback, rule, data.x_train[idx], target)
        rmsprop_(state.net.params, grads, state.sq_avg, lr)
        errors += (a_y.argmax(-1) != y).sum(-1)
        loss += bce(a_y, target)
    return errors, loss


@torch.no_grad()
def test_errors(net: MLP, x: Tensor, y: Tensor) -> Tensor:
    """Misclassified test examples per seed: [S]."""
    wrong = torch.zeros(net.weights[0].shape[0], device=x.device)
    for start in range(0, x.shape[0], EVAL_CHUNK):
        _, a_y = net.forward(x[start:start + EVAL_CHUNK])
        wrong += (a_y.argmax(-1) != y[start:start + EVAL_CHUNK]).sum(-1)
    return wrong


@dataclass
class SeedResult:
    seed: int
    stop: str                      # converged | max_epochs | diverged
    history: list[dict] = field(default_factory=list)


def fit(state: State, data: Data, rule: Rule, lr: float, batch_size: int, max_epochs: int,
        on_final: Callable[[SeedResult], None] = lambda r: None) -> list[SeedResult]:
    """Train until every seed has stopped; `on_final` sees each seed as soon as it is final."""
    n_train, n_test = data.x_train.shape[0], data.x_test.shape[0]
    histories = {s: [] for s in state.seeds}
    avg = {s: AVG_START for s in state.seeds}
    results = []
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        with torch.no_grad():
            errors, loss = train_epoch(state, data, rule, lr, batch_size)
        wrong = test_errors(state.net, data.x_test, data.y_test)
        errors, loss, wrong = errors.tolist(), loss.tolist(), wrong.tolist()  # one sync per epoch
        seconds = time.perf_counter() - start

        keep = []
        for i, seed in enumerate(state.seeds):
            frac = errors[i] / n_train
            avg[seed] = AVG_KEEP * avg[seed] + (1 - AVG_KEEP) * frac
            histories[seed].append({
                "epoch": epoch, "train_error": 100 * frac, "train_loss": loss[i] / n_train,
                "test_error": 100 * wrong[i] / n_test, "seconds": seconds})
            if not math.isfinite(loss[i]):
                stop = "diverged"
            elif avg[seed] <= STOP_AT:
                stop = "converged"
            elif epoch == max_epochs:
                stop = "max_epochs"
            else:
                keep.append(i)
                continue
            results.append(SeedResult(seed, stop, histories[seed]))
            on_final(results[-1])
        log.info(_epoch_line(epoch, max_epochs, [histories[s][-1] for s in state.seeds], seconds))
        if not keep:
            break
        if len(keep) < len(state.seeds):
            state = state.select(keep)
    return results


def _epoch_line(epoch: int, max_epochs: int, rows: list[dict], seconds: float) -> str:
    def stat(key: str) -> str:
        vals = [r[key] for r in rows]
        mean = sum(vals) / len(vals)
        return f"{mean:6.2f}%" + (f" [{min(vals):.2f}-{max(vals):.2f}]" if len(vals) > 1 else "")
    seeds = f"  ({len(rows)} seeds)" if len(rows) > 1 else ""
    return (f"epoch {epoch:>3}/{max_epochs}  train {stat('train_error')}  "
            f"test {stat('test_error')}  {seconds:5.1f}s{seeds}")
