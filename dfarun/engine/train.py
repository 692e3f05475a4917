"""Training: every seed of one configuration in one stacked pass (protocol: docs/protocol.md).

Each seed owns its init, feedback matrices, data order and learning rate, all derived from
that seed alone (its dropout masks too), and every tensor op is batched over the leading seed
dimension, so a seed follows the same trajectory alone or stacked with others. A seed that
converges, diverges or ends its schedule is final at that epoch and leaves the stack; the
others go on. One mini-batch's arithmetic is step.py's.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dfarun.engine.conv import ConvNet
from dfarun.engine.data import Data
from dfarun.engine.hyp import HYP
from dfarun.engine.nets import Dropout, Network, dropout_on
from dfarun.engine.rules import Rule
from dfarun.engine.state import State
from dfarun.engine.step import Step, alignment, batch

log = logging.getLogger("dfarun")

AVG_KEEP = HYP["stop"]["keep"].value               # m <- 0.75 m + 0.25 err_epoch (author's stopping rule)
STOP_AT = HYP["stop"]["at"].value                  # converged when m <= 0.01% (as a fraction)
MAX_HALVINGS = HYP["stop"]["max_halvings"].value   # schedule=auto ends a seed after its 8th halving
EVAL_CHUNK = 2000      # most examples per evaluation pass
EVAL_UNITS = 2**25      # and at most this many activations (floats) per layer per pass


@dataclass(frozen=True)
class Protocol:
    lr: float                  # RMSprop step
    batch_size: int
    max_epochs: int
    schedule: str = "constant"  # constant | auto (halve when the epoch error is not below m) | step
    halve_every: int = 0       # schedule=step: halve after every this many epochs
    p_input: float = 0.0       # dropout on the input (0: off)
    p_hidden: float = 0.0      # dropout after each hidden layer
    p_conv: tuple[float, ...] = ()  # dropout after each conv block (empty: p_hidden); conv nets only
    eps: float = 0.0           # fast-gradient-sign step on the inputs (0: off)
    compile: bool | str = False  # the whole step as one torch.compile'd graph: True, False or "auto" (step.Step)
    align_every: int = 0       # steps between alignment measurements (0: off, costs nothing)
    freeze_first: int = 0      # epochs during which the first hidden layer is not updated

    def __post_init__(self):
        # config validation (checks.py) says this to users; here it guards code that builds a
        # Protocol directly from ending in a division by zero at the first epoch
        if self.schedule == "step" and self.halve_every < 1:
            raise ValueError(f"halve_every={self.halve_every}: expected an int >= 1 with schedule='step'")

    @property
    def dropout(self) -> bool:
        return dropout_on(self.p_input, self.p_hidden, self.p_conv)


# --- epochs --------------------------------------------------------------------------------

def train_epoch(state: State, data: Data, rule: Rule, protocol: Protocol,
                on_step: Callable[[int, int], None] = lambda done, total: None, step: Step | None = None
                ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """One reshuffled pass; returns per-seed (misclassified count, summed loss) as trained, and
    the epoch's mean alignment angles [L, S] (signals, updates) when they are tracked.
    `on_step(done, total)` sees each finished mini-batch (progress inside long epochs); `step`
    runs each mini-batch (fit makes one per job, compiled when protocol.compile; None: eager)."""
    device = data.x_train.device
    step = step or Step(False, device)
    n = data.x_train.shape[0]
    order = torch.stack([torch.randperm(n, generator=g) for g in state.data_order]).to(device)
    eye = step.buffer("eye", torch.eye(state.net.weights[-1].shape[1], device=device))  # one-hot targets
    lr = step.buffer("lr", protocol.lr * torch.tensor(state.lr_scale, device=device))  # [S]: auto differs per seed
    steps = -(-n // protocol.batch_size)  # the last batch may be short
    sites = [data.x_train.shape[1], *state.net.hidden]  # units per example where dropout masks
    # Figure 2 (left): W_1 and b_1 stay as they are during the first `freeze_first` epochs
    frozen = (0, len(state.net.weights)) if 0 < state.epoch <= protocol.freeze_first else ()
    errors = step.buffer("errors", torch.zeros(len(state.seeds), device=device))
    loss = step.buffer("loss", torch.zeros(len(state.seeds), device=device))
    angles = []
    for i in range(steps):
        idx = order[:, i * protocol.batch_size:(i + 1) * protocol.batch_size]
        if protocol.align_every and i % protocol.align_every == 0:  # eager, before the step
            x, _, target = batch(state.net, data.x_train, data.y_train, idx, eye, protocol.eps)
            angles.append(alignment(state.net, state.feedback, rule, x, target))
        dropout = None
        if protocol.dropout:  # drawn here, eagerly, from each seed's generator: the step only thresholds them
            dropout = Dropout.draw(protocol.p_input, protocol.p_hidden, tuple(state.noise), idx.shape[1], sites,
                                   protocol.p_conv)
        step(state.net, state.feedback, state.sq_avg, rule, data.x_train, data.y_train, idx, eye, lr, dropout,
             protocol.eps, frozen, errors, loss)
        on_step(i + 1, steps)
    errors, loss = errors.clone(), loss.clone()  # the buffers are the next epoch's
    if not angles:
        return errors, loss, None
    return errors, loss, tuple(torch.stack(a).nanmean(0) for a in zip(*angles))


def errors_on(net: Network, x: Tensor, y: Tensor) -> Tensor:
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
    net: Network | None = None  # this seed's final weights, [1, ...] each


def log_epoch(epoch: int, rows: dict[int, dict], max_epochs: int) -> None:
    if line := compile_line(list(rows.values())):
        log.info(line)
    log.info(epoch_line(epoch, max_epochs, list(rows.values())))


def fit(state: State, data: Data, rule: Rule, protocol: Protocol,
        on_final: Callable[[SeedResult], None] = lambda r: None,
        on_epoch: Callable[[State], None] = lambda s: None,
        on_rows: Callable[[int, dict[int, dict], int], None] = log_epoch,
        on_step: Callable[[int, int], None] = lambda done, total: None, step: Step | None = None
        ) -> list[SeedResult]:
    """Train until every seed has stopped. After each epoch, `on_rows(epoch, {seed: row},
    max_epochs)` sees the history row of every seed that trained it (progress.Reporter: lines,
    live history, TensorBoard); then `on_final` sees each seed that became final, and
    `on_epoch` the state that goes on (checkpoints). `on_step` is passed to train_epoch; `step`
    runs the mini-batches (None: a new one, compiled as protocol.compile says). Compiling is
    not training: its seconds are left out of the epoch's `seconds`, and the rows of an epoch
    in which the step compiled give them as `compile_seconds`."""
    results = []
    step = step or Step(protocol.compile, data.x_train.device)
    steps = (protocol.max_epochs - state.epoch) * -(-len(data.y_train) // protocol.batch_size)
    step.plan(steps, len(state.seeds), conv=isinstance(state.net, ConvNet))
    while state.seeds:
        state.epoch += 1
        start, compiled_before = time.perf_counter(), step.compile_seconds
        with torch.no_grad():
            errors, loss, angles = train_epoch(state, data, rule, protocol, on_step, step)
            evals = {name: (errors_on(state.net, x, y), len(y)) for name, (x, y) in data.evaluation().items()}
        errors, loss = errors.tolist(), loss.tolist()  # one sync per epoch
        evals = {name: (wrong.tolist(), n) for name, (wrong, n) in evals.items()}
        compiling = step.compile_seconds - compiled_before
        seconds = time.perf_counter() - start - compiling

        keep, final = [], []
        for i, seed in enumerate(state.seeds):
            row = {"epoch": state.epoch, "train_error": 100 * errors[i] / len(data.y_train),
                   "train_loss": loss[i] / len(data.y_train), "seconds": seconds}
            if compiling:
                row["compile_seconds"] = compiling
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
    auto = protocol.schedule == "auto"
    if auto:
        halve = err >= state.avg[i]
    else:  # the step schedule halves on the clock; constant never
        halve = protocol.schedule == "step" and state.epoch % protocol.halve_every == 0
    if halve:
        state.lr_scale[i] /= 2
        state.halvings[i] += 1
    state.avg[i] = AVG_KEEP * state.avg[i] + (1 - AVG_KEEP) * err
    if state.avg[i] <= STOP_AT:
        return "converged"
    if auto and state.halvings[i] >= MAX_HALVINGS:  # the step schedule halves on until max_epochs
        return "schedule_end"
    if state.epoch >= protocol.max_epochs:
        return "max_epochs"
    return None


def compile_line(rows: list[dict]) -> str:
    """The line saying how long the step compiled during an epoch ("" where it did not)."""
    seconds = rows[0].get("compile_seconds", 0.0) if rows else 0.0
    return f"compiled the training step in {seconds:.1f}s (not counted in the epoch's time)" if seconds else ""


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
