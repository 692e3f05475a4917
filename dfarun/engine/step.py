"""One training step for every stacked seed: forward, the rule's signals, eq. (10), RMSprop.

`sgd_step` is the whole step as one function of tensors, so that torch.compile makes it one
graph: the element-wise work between the matrix products (activations, f'(a), the rule's
products, RMSprop, the error count) is fused instead of costing a pass over memory and a
kernel launch per op; on CUDA the graph is also replayed as a CUDA graph, with no per-kernel
launch cost. `Step` runs it compiled or eager for a job (compile=auto: compiled where the job
has enough steps to earn back the compile time), and falls back to eager (once, with a
warning) where compiling fails. Both run the same code: compiled equals eager up to float
rounding (tests/test_compile.py).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dfarun.engine.hyp import HYP
from dfarun.errors import interrupted
from dfarun.engine.nets import Dropout, Network
from dfarun.engine.rules import RULES, Rule

log = logging.getLogger("dfarun")

RMSPROP_DECAY = HYP["rmsprop"]["decay"].value  # running average of squared updates (hyp.py: 0.99)
RMSPROP_EPS = HYP["rmsprop"]["eps"].value      # added after the square root, as torch.optim.RMSprop does


# --- the rule's updates -----------------------------------------------------------------

def updates(net: Network, feedback: list[Tensor], rule: Rule, x: Tensor, target: Tensor,
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


def alignment(net: Network, feedback: list[Tensor], rule: Rule, x: Tensor, target: Tensor
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


def fgsm(net: Network, x: Tensor, target: Tensor, eps: float) -> Tensor:
    """x + eps * sign(dJ/dx), the input gradient by true back-propagation whatever the rule."""
    p = net.forward(x)
    dh1 = RULES["bp"].signals(torch.sigmoid(p.a_y) - target, net, p, [])[0]
    return x + eps * net.back(0, net.local(p, 0, dh1), net.weights[0]).sign()


def rmsprop_(params: list[Tensor], grads: list[Tensor], sq_avg: list[Tensor], lr: Tensor) -> None:
    """torch.optim.RMSprop(alpha=0.99, eps=1e-8), no momentum, element-wise so seeds never mix.
    `lr` is [S], each seed's rate (they differ under schedule=auto). Eagerly on a CPU this is
    bit for bit torch's update: p + (-1 * (g * lr)) / d rounds as torch's p + (-lr * g) / d
    does (CUDA's addcdiv and the compiled step round differently, within float precision)."""
    for p, g, v in zip(params, grads, sq_avg):
        v.mul_(RMSPROP_DECAY).addcmul_(g, g, value=1 - RMSPROP_DECAY)
        p.addcdiv_(g * lr.view(-1, *[1] * (g.dim() - 1)), v.sqrt().add_(RMSPROP_EPS), value=-1)


def bce(a_y: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of logistic outputs, summed over outputs and batch: [S]."""
    return (F.softplus(a_y) - target * a_y).sum((1, 2))


# --- the whole step ---------------------------------------------------------------------

def sgd_step(net: Network, feedback: list[Tensor], sq_avg: list[Tensor], rule: Rule, x_all: Tensor,
             y_all: Tensor, idx: Tensor, eye: Tensor, lr: Tensor, dropout: Dropout | None, eps: float,
             frozen: tuple[int, ...], errors: Tensor, loss: Tensor) -> None:
    """Train on the mini-batch x_all[idx] (idx [S, B]: each seed's own examples): updates the
    network and `sq_avg` in place, except the parameters at positions `frozen`, and adds each
    seed's misclassified examples and summed loss, as trained, to `errors` and `loss` [S] (in
    the graph: no extra ops per step). `eye` is the one-hot targets, C x C."""
    x, y, target = batch(net, x_all, y_all, idx, eye, eps)
    grads, a_y = updates(net, feedback, rule, x, target, dropout)
    keep = [k for k in range(len(grads)) if k not in frozen]
    rmsprop_([net.params[k] for k in keep], [grads[k] for k in keep], [sq_avg[k] for k in keep], lr)
    errors.add_((a_y.argmax(-1) != y).sum(-1))
    loss.add_(bce(a_y, target))


def batch(net: Network, x_all: Tensor, y_all: Tensor, idx: Tensor, eye: Tensor, eps: float
          ) -> tuple[Tensor, Tensor, Tensor]:
    """The mini-batch as trained: inputs (perturbed by FGSM when eps > 0: the batch is trained
    on the perturbed inputs only), labels and one-hot targets."""
    x, y = x_all[idx], y_all[idx]
    target = eye[y]
    return (fgsm(net, x, target, eps) if eps else x), y, target


# --- compiled or eager -------------------------------------------------------------------

# compile=auto compiles a job's step where the work it has to go reaches the break-even, compile
# seconds / seconds saved per step. `python -m dfarun.cli.bench --break-even` measures it; on the
# 2-core CPU, 2 threads, an empty compile cache (a filled one compiles ~10x faster):
#   2x800 DFA 6,100 steps (1 seed), 2,700 (3 seeds: 8,200 seed-steps); 2x800 BP 23,600;
#   7x240 DFA 18,000; 100x240 DFA 4,700 (61 s to compile, then 18 ms a step against 31 eager);
#   conv_tanh DFA and BP: never (compiled steps 16-43% slower than eager).
# On a CPU the saving grows with each stacked seed's work, so the threshold counts seed-steps:
# at 6,000 the most any case above loses, by falling on the wrong side of its break-even, is
# least (~15 s). On CUDA a CUDA graph saves each step's kernel launches whatever the stack, so
# it counts steps; 10,000 is an estimate (no eager GPU timing here: bench --break-even on one).
COMPILE_PAYS_AFTER = {"cpu": 6_000, "cuda": 10_000}  # devices not named: eager
PER_SEED = {"cpu"}            # devices whose threshold counts seed-steps
NEVER = {("cpu", "conv")}     # (device, network) where the compiled step is the slower one


def compile_pays(device: torch.device, conv: bool, steps: int, seeds: int) -> tuple[bool, str]:
    """compile=auto's choice for a job with `steps` mini-batches of `seeds` stacked seeds to
    go (at most: seeds that converge stop early), and why, in words."""
    pays, net = COMPILE_PAYS_AFTER.get(device.type), "conv" if conv else "mlp"
    if pays is None:
        return False, f"compile=auto: no break-even known on {device.type}"
    if (device.type, net) in NEVER:
        return False, f"compile=auto: a compiled {net} step is slower than an eager one on {device.type}"
    work, unit = (steps * seeds, "seed-steps") if device.type in PER_SEED else (steps, "steps")
    return work >= pays, f"compile=auto: {work:,} {unit} to go; compiling pays after about {pays:,} on {device.type}"


def compile_mode(value: bool | int | str) -> bool | str:
    """The `compile` setting as True, False or "auto" (also from the numbers that equal the
    bools, which the config's choices let through, and from strings in any case)."""
    if not isinstance(value, str) and value in (0, 1):
        return bool(value)
    text = str(value).lower()
    if text not in ("auto", "true", "false"):
        raise ValueError(f"compile={value!r}: expected auto, true or false")
    return "auto" if text == "auto" else text == "true"


class Step:
    """`sgd_step` for one job: compiled when `compile` is true, eager when false; "auto"
    decides at the job's first `plan` (train.fit calls it) from the device, the network and
    the work the job has to go (`compile_pays`), and runs eagerly until then.

    The compiled function is made afresh per job (torch.compiler.reset): in a sweep, one
    process trains many networks, and their graphs would otherwise pile up on one function
    until dynamo's recompile limit silently sends the rest to eager. Within a job it compiles
    at the first step, and again where the graph's inputs change kind: when seeds leave the
    stack (the stack size becomes dynamic; a stack of one is specialised) and when Figure 2's
    first layer is unfrozen. Those calls are timed into `compile_seconds` (each includes one
    step's own work, milliseconds), so that train.fit can keep compiling out of an epoch's
    time. A batch of another size (an epoch's short last one) runs eagerly
    rather than costing a compile. On CUDA the step runs as a CUDA graph
    (mode="reduce-overhead"): the tensors it keeps between steps (weights, optimizer state,
    feedback, the data set) and the per-epoch ones it reads or adds to (`buffer`: one-hot
    targets, rates, tallies) are marked static and keep their addresses, so the graph updates
    them in place instead of copying them in, or being recorded again, on every replay."""

    failed = False  # compiling failed once in this process: every later job runs eagerly

    def __init__(self, compile: bool | str, device: torch.device):
        self.mode = compile_mode(compile)
        self.device = device
        self.cuda = device.type == "cuda"
        self.compiled: Callable | None = None
        self.compile_seconds = 0.0          # spent in calls that compiled a graph (or tried to)
        self._graphs: set[tuple] = set()    # the kinds of call a graph has been compiled for
        self._stack: int | None = None      # the stack size of the first compiled call
        if self.mode is True:
            self._compile("compile=true")
        self.full_batch: int | None = None  # the batch size the compiled graph is for
        self.ran = False                    # a compiled call has succeeded: later errors are real ones
        self._buffers: dict[str, Tensor] = {}

    def plan(self, steps: int, seeds: int, conv: bool) -> None:
        """compile=auto: compile or not (`compile_pays`), once per job, at its first pass."""
        if self.mode != "auto":
            return
        self.mode, why = compile_pays(self.device, conv, steps, seeds)
        if self.mode:
            self._compile(why)
        else:
            log.info(f"training eagerly ({why}; compile=true compiles)")

    def _compile(self, why: str) -> None:
        if Step.failed:
            return
        log.info(f"compiling the training step ({why}; torch.compile takes seconds to minutes, once per job "
                 "and again when seeds leave the stack; not counted in the epochs' times)")
        torch.compiler.reset()
        self.compiled = torch.compile(sgd_step, mode="reduce-overhead" if self.cuda else None)

    def buffer(self, name: str, value: Tensor) -> Tensor:
        """`value` in this Step's own tensor `name`, the same tensor epoch after epoch (a new one
        only when the shape changes), so that a CUDA graph which captured it stays valid."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != value.shape or buf.device != value.device:
            buf = self._buffers[name] = value.clone()
        else:
            buf.copy_(value)
        return buf

    def __call__(self, net: Network, feedback: list[Tensor], sq_avg: list[Tensor], rule: Rule,
                 x_all: Tensor, y_all: Tensor, idx: Tensor, eye: Tensor, lr: Tensor,
                 dropout: Dropout | None, eps: float, frozen: tuple[int, ...], errors: Tensor, loss: Tensor) -> None:
        args = (net, feedback, sq_avg, rule, x_all, y_all, idx, eye, lr, dropout, eps, frozen, errors, loss)
        self.full_batch = self.full_batch or idx.shape[1]
        if self.compiled is None or Step.failed or idx.shape[1] != self.full_batch:
            return sgd_step(*args)
        if self.cuda:
            for t in [*net.params, *sq_avg, *feedback, x_all, y_all, eye, lr, errors, loss]:
                torch._dynamo.mark_static_address(t)
        kind = (self._stack_kind(idx.shape[0]), frozen, dropout is None, eps)
        start = time.perf_counter() if kind not in self._graphs else None
        try:
            self.compiled(*args)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as err:  # torch's compiler stack raises many kinds
            if interrupted(err):  # Ctrl-C that landed in C++ code: not a compiler failure
                raise
            # only before the first compiled step has run: once one has, an error may come
            # after some in-place updates, and running the step again eagerly would repeat them
            if self.ran and not isinstance(err, torch._dynamo.exc.BackendCompilerFailed):
                raise
            Step.failed = True
            log.warning(f"torch.compile unavailable ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                        "training eagerly")
            return sgd_step(*args)
        finally:
            if start is not None:  # a new kind of call: dynamo compiled (or tried to) a graph for it
                self._graphs.add(kind)
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                self.compile_seconds += time.perf_counter() - start
        self.ran = True

    def _stack_kind(self, seeds: int) -> int | str:
        """Which graph a stack of `seeds` runs: dynamo specialises the first stack size it sees
        and a stack of one, and makes the size dynamic at the first other one."""
        self._stack = self._stack or seeds
        return 1 if seeds == 1 else "first" if seeds == self._stack else "dynamic"
