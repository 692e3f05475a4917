"""Training: every seed of one configuration in one stacked pass (protocol: docs/protocol.md).

Each seed owns its init, feedback matrices, data order and learning rate, all derived from
that seed alone (its dropout masks too), and every tensor op is batched over the leading seed
dimension, so a seed follows the same trajectory alone or stacked with others. A seed that converges, diverges or ends its schedule is
final at that epoch and leaves the stack; the others go on.
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

from .conv import ConvNet
from .data import Data
from .nets import MLP, Dropout
from .rules import RULES, Rule
from .state import State

log = logging.getLogger("dfarun")

RMSPROP_DECAY = 0.99   # running average of squared updates (author's value = torch default)
RMSPROP_EPS = 1e-8     # added after the square root, as torch.optim.RMSprop does
AVG_KEEP = 0.75        # m <- 0.75 m + 0.25 err_epoch (author's stopping rule)
STOP_AT = 1e-4         # converged when m <= 0.01% (as a fraction)
MAX_HALVINGS = 8       # schedule=auto ends a seed after its 8th halving (author's rule)
EVAL_CHUNK = 2000      # most examples per evaluation pass
EVAL_UNITS = 2**25      # and at most this many activations (floats) per layer per pass


@dataclass(frozen=True)
class Protocol:
    lr: float                  # RMSprop step
    batch_size: int
    max_epochs: int
    schedule: str = "constant"  # constant | auto (halve when the epoch error is not below m)
    p_input: float = 0.0       # dropout on the input (0: off)
    p_hidden: float = 0.0      # dropout after each hidden layer
    p_conv: tuple[float, ...] = ()  # dropout after each conv block (empty: p_hidden)
    eps: float = 0.0           # fast-gradient-sign step on the inputs (0: off)
    compile: bool = False      # fuse the RMSprop update with torch.compile (see rmsprop_)
    align_every: int = 0       # steps between alignment measurements (0: off, costs nothing)
    freeze_first: int = 0      # epochs during which the first hidden layer is not updated


# --- one step ------------------------------------------------------------------------------

def updates(net: MLP | ConvNet, feedback: list[Tensor], rule: Rule, x: Tensor, target: Tensor,
            dropout: Dropout | None = None) -> tuple[list[Tensor], Tensor]:
    """Gradients for every parameter (order of net.params) and the output pre-activation.

    The error e = sigmoid(a_y) - target is summed over the batch, as in the author's code:
    for BP this is exactly the gradient of the summed binary cross-entropy."""
    p = net.forward(x, dropout)
    e = torch.sigmoid(p.a_y) - target
    return net.weight_updates(p, _deltas(net, p, rule.signals(e, net, p, feedback)) + [e]), p.a_y


def _deltas(net, p, signals: list[Tensor]) -> list[Tensor]:
    """δa_k of every hidden layer from its signal δh_k: the network's local backward step."""
    return [net.local(p, k, dh) for k, dh in enumerate(signals)]


def alignment(net: MLP | ConvNet, feedback: list[Tensor], rule: Rule, x: Tensor, target: Tensor
              ) -> tuple[Tensor, Tensor]:
    """Angles in degrees, [L, S], between the rule and back-propagation at the same weights:
    the signal δh_i the rule sends each hidden layer against BP's gradient c_i (Theorem 1:
    below 90° means δh_i descends), and the weight updates δW_i the two give. Measured on
    the clean forward pass (no dropout); NaN where either vector is zero (e.g. zero weights)."""
    p = net.forward(x)
    e = torch.sigmoid(p.a_y) - target
    ours = rule.signals(e, net, p, feedback)
    true = RULES["bp"].signals(e, net, p, [])
    hidden = len(ours)  # the first `hidden` updates are the hidden layers' weights
    dW_ours, dW_true = (net.weight_updates(p, _deltas(net, p, s) + [e])[:hidden] for s in (ours, true))
    signal_angles = torch.stack([_angle(a, b) for a, b in zip(ours, true)])
    update_angles = torch.stack([_angle(a, b) for a, b in zip(dW_ours, dW_true)])
    return signal_angles, update_angles


def _angle(a: Tensor, b: Tensor) -> Tensor:
    """Per seed (leading dim), over everything else."""
    a, b = a.flatten(1), b.flatten(1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = ((a * b).sum(1) / norms).clamp(-1, 1)
    return torch.where(norms > 0, torch.rad2deg(torch.acos(cos)), torch.nan)


def fgsm(net: MLP | ConvNet, x: Tensor, target: Tensor, eps: float) -> Tensor:
    """x + eps * sign(dJ/dx), the input gradient by true back-propagation whatever the rule."""
    p = net.forward(x)
    dh1 = RULES["bp"].signals(torch.sigmoid(p.a_y) - target, net, p, [])[0]
    return x + eps * net.back(0, net.local(p, 0, dh1), net.weights[0]).sign()


def rmsprop_(params: list[Tensor], grads: list[Tensor], sq_avg: list[Tensor], lr: float | Tensor,
             fused: bool = False) -> None:
    """torch.optim.RMSprop(alpha=0.99, eps=1e-8), no momentum, element-wise so seeds never mix.
    `lr` is one float, or a [S] tensor when seeds' rates differ (schedule=auto).

    Eagerly this is five passes over every parameter, which for stacked seeds no longer fit
    in cache: `fused=True` runs it as one torch.compile'd kernel (measured here on ten 2x800
    seeds: 34 -> 12 ms per step; compiling took 16 s, once per process and stack size). Where compiling
    fails (no C++ compiler, say) it warns once and stays eager."""
    global _fused_failed, _fused_announced
    if fused and not _fused_failed:
        if not _fused_announced:
            _fused_announced = True
            log.info("compiling the fused optimizer step (torch.compile, once per process; ~15 s on 2 CPU cores)")
        try:
            return _rmsprop_fused(params, grads, sq_avg, lr)
        except Exception as err:  # torch's compiler stack raises many kinds
            _fused_failed = True
            log.warning(f"torch.compile unavailable ({type(err).__name__}); using the eager optimizer")
    _rmsprop_eager(params, grads, sq_avg, lr)


def _rmsprop_eager(params: list[Tensor], grads: list[Tensor], sq_avg: list[Tensor], lr: float | Tensor) -> None:
    for p, g, v in zip(params, grads, sq_avg):
        v.mul_(RMSPROP_DECAY).addcmul_(g, g, value=1 - RMSPROP_DECAY)
        if isinstance(lr, Tensor):
            p.addcdiv_(g * lr.view(-1, *[1] * (g.dim() - 1)), v.sqrt().add_(RMSPROP_EPS), value=-1)
        else:
            p.addcdiv_(g, v.sqrt().add_(RMSPROP_EPS), value=-lr)


_rmsprop_fused = torch.compile(_rmsprop_eager, dynamic=True)  # compiled at its first call
_fused_failed = False
_fused_announced = False


def bce(a_y: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of logistic outputs, summed over outputs and batch: [S]."""
    return (F.softplus(a_y) - target * a_y).sum((1, 2))


# --- epochs --------------------------------------------------------------------------------

def train_epoch(state: State, data: Data, rule: Rule, protocol: Protocol,
                on_step: Callable[[int, int], None] = lambda done, total: None
                ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """One reshuffled pass; returns per-seed (misclassified count, summed loss) as trained, and
    the epoch's mean alignment angles [L, S] (signals, updates) when they are tracked.
    `on_step(done, total)` sees each finished mini-batch (progress inside long epochs)."""
    device = data.x_train.device
    n = data.x_train.shape[0]
    order = torch.stack([torch.randperm(n, generator=g) for g in state.data_order]).to(device)
    eye = torch.eye(state.net.weights[-1].shape[1], device=device)  # one-hot targets, C x C
    scales = set(state.lr_scale)
    lr = (protocol.lr * scales.pop() if len(scales) == 1
          else protocol.lr * torch.tensor(state.lr_scale, device=device))
    dropout = None
    if protocol.p_input or protocol.p_hidden:
        dropout = Dropout(protocol.p_input, protocol.p_hidden, tuple(state.noise), protocol.p_conv)
    # Figure 2 (left): W_1 and b_1 stay as they are during the first `freeze_first` epochs
    frozen = {0, len(state.net.weights)} if 0 < state.epoch <= protocol.freeze_first else set()
    params, sq_avg = ([t for k, t in enumerate(ts) if k not in frozen] for ts in (state.net.params, state.sq_avg))
    errors = torch.zeros(len(state.seeds), device=device)
    loss = torch.zeros(len(state.seeds), device=device)
    angles = []
    steps = -(-n // protocol.batch_size)
    for step, start in enumerate(range(0, n, protocol.batch_size)):  # the last batch may be short
        idx = order[:, start:start + protocol.batch_size]
        x, y = data.x_train[idx], data.y_train[idx]
        target = eye[y]
        if protocol.eps:
            x = fgsm(state.net, x, target, protocol.eps)  # train on the perturbed batch only
        if protocol.align_every and step % protocol.align_every == 0:
            angles.append(alignment(state.net, state.feedback, rule, x, target))
        grads, a_y = updates(state.net, state.feedback, rule, x, target, dropout)
        grads = [g for k, g in enumerate(grads) if k not in frozen]
        rmsprop_(params, grads, sq_avg, lr, protocol.compile)
        errors += (a_y.argmax(-1) != y).sum(-1)
        loss += bce(a_y, target)
        on_step(step + 1, steps)
    if not angles:
        return errors, loss, None
    return errors, loss, tuple(torch.stack(a).nanmean(0) for a in zip(*angles))


def errors_on(net: MLP | ConvNet, x: Tensor, y: Tensor) -> Tensor:
    """Misclassified examples per seed, no dropout: [S]."""
    seeds = net.weights[0].shape[0]
    wrong = torch.zeros(seeds, device=x.device)
    chunk = max(1, min(EVAL_CHUNK, EVAL_UNITS // (seeds * net.widest)))
    for start in range(0, x.shape[0], chunk):
        a_y = net.forward(x[start:start + chunk]).a_y
        wrong += (a_y.argmax(-1) != y[start:start + chunk]).sum(-1)
    return wrong


@dataclass
class SeedResult:
    seed: int
    stop: str                      # converged | max_epochs | diverged | schedule_end
    history: list[dict] = field(default_factory=list)
    net: MLP | ConvNet | None = None  # this seed's final weights, [1, ...] each


def log_epoch(epoch: int, rows: dict[int, dict], max_epochs: int) -> None:
    log.info(epoch_line(epoch, max_epochs, list(rows.values())))


def fit(state: State, data: Data, rule: Rule, protocol: Protocol,
        on_final: Callable[[SeedResult], None] = lambda r: None,
        on_epoch: Callable[[State], None] = lambda s: None,
        on_rows: Callable[[int, dict[int, dict], int], None] = log_epoch,
        on_step: Callable[[int, int], None] = lambda done, total: None) -> list[SeedResult]:
    """Train until every seed has stopped. After each epoch, `on_rows(epoch, {seed: row},
    max_epochs)` sees the history row of every seed that trained it (progress.Reporter: lines,
    live history, TensorBoard); then `on_final` sees each seed that became final, and
    `on_epoch` the state that goes on (checkpoints). `on_step` is passed to train_epoch."""
    results = []
    while state.seeds:
        state.epoch += 1
        start = time.perf_counter()
        with torch.no_grad():
            errors, loss, angles = train_epoch(state, data, rule, protocol, on_step)
            evals = {name: (errors_on(state.net, x, y), len(y)) for name, (x, y) in data.evaluation().items()}
        errors, loss = errors.tolist(), loss.tolist()  # one sync per epoch
        evals = {name: (wrong.tolist(), n) for name, (wrong, n) in evals.items()}
        seconds = time.perf_counter() - start

        keep, final = [], []
        for i, seed in enumerate(state.seeds):
            row = {"epoch": state.epoch, "train_error": 100 * errors[i] / len(data.y_train),
                   "train_loss": loss[i] / len(data.y_train), "seconds": seconds}
            row.update({f"{name}_error": 100 * wrong[i] / n for name, (wrong, n) in evals.items()})
            if protocol.schedule != "constant":
                row["lr"] = protocol.lr * state.lr_scale[i]
            if angles is not None:  # per hidden layer, degrees, mean over the epoch's samples
                row["align_signal"], row["align_update"] = (a[:, i].tolist() for a in angles)
            state.history[i].append(row)
            stop = _step_schedule(state, i, errors[i] / len(data.y_train), loss[i], protocol)
            if stop is None:
                keep.append(i)
            else:
                idx = torch.tensor([i], device=state.net.weights[0].device)
                final.append(SeedResult(seed, stop, state.history[i], state.net.select(idx)))
        on_rows(state.epoch, {s: h[-1] for s, h in zip(state.seeds, state.history)}, protocol.max_epochs)
        for result in final:
            on_final(result)
        results += final
        if len(keep) < len(state.seeds):
            state = state.select(keep)
        on_epoch(state)
    return results


def _step_schedule(state: State, i: int, err: float, loss: float, protocol: Protocol) -> str | None:
    """Update seed i's moving average (and rate); its stop reason, or None to go on."""
    if not math.isfinite(loss):
        return "diverged"
    if protocol.schedule == "auto" and err >= state.avg[i]:
        state.lr_scale[i] /= 2
        state.halvings[i] += 1
    state.avg[i] = AVG_KEEP * state.avg[i] + (1 - AVG_KEEP) * err
    if state.avg[i] <= STOP_AT:
        return "converged"
    if state.halvings[i] >= MAX_HALVINGS:
        return "schedule_end"
    if state.epoch >= protocol.max_epochs:
        return "max_epochs"
    return None


def epoch_line(epoch: int, max_epochs: int, rows: list[dict]) -> str:
    """The epoch's errors over the seeds that trained it: mean [min-max] per data split."""
    seconds = rows[0]["seconds"]

    def stat(key: str) -> str:
        vals = [r[key] for r in rows]
        mean = sum(vals) / len(vals)
        return f"{mean:6.2f}%" + (f" [{min(vals):.2f}-{max(vals):.2f}]" if len(vals) > 1 else "")
    evals = "".join(f"  {k[:-6]} {stat(k)}" for k in rows[0] if k.endswith("_error") and k != "train_error")
    seeds = f"  ({len(rows)} seeds)" if len(rows) > 1 else ""
    return f"epoch {epoch:>3}/{max_epochs}  train {stat('train_error')}{evals}  {seconds:5.1f}s{seeds}"
