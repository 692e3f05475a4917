"""A job's training state: every seed's network, feedback, optimizer and random streams, stacked.

Each seed owns its init, feedback matrices, data order and learning rate, all derived from
that seed alone (init_state), so a seed follows the same trajectory alone or stacked. The
state is saved whole as the job's checkpoint (to_dict / from_dict).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from dfarun.engine.conv import ConvArch, ConvNet
from dfarun.engine.hyp import HYP
from dfarun.engine.nets import ACTIVATIONS, MLP, MLPArch
from dfarun.engine.rules import Rule

AVG_START = HYP["stop"]["start"].value  # moving average of the training error (fraction) starts at 100%
DATA_ORDER_OFFSET = 2**32  # data-order generator seed = seed + offset: disjoint from init streams
NOISE_OFFSET = 2**33       # dropout-mask generator seed = seed + offset: a third disjoint stream


@dataclass
class State:
    """Everything a job needs to go on: saved whole as its checkpoint. Lists are per seed."""
    seeds: list[int]
    net: MLP | ConvNet
    feedback: list[Tensor]             # the rule's fixed matrices, [S, ...] each
    sq_avg: list[Tensor]               # RMSprop state, aligned with net.params
    data_order: list[torch.Generator]  # CPU
    lr_scale: list[float]              # schedules auto/step halve it: lr = protocol.lr * scale
    avg: list[float]                   # moving average of the training error (fraction)
    halvings: list[int]
    history: list[list[dict]]
    noise: list[torch.Generator]       # dropout masks, on the device
    epoch: int = 0

    def select(self, keep: list[int]) -> State:
        idx = torch.tensor(keep, dtype=torch.long, device=self.net.weights[0].device)
        pick = lambda xs: [xs[i] for i in keep]
        return State(pick(self.seeds), self.net.select(idx), [b[idx] for b in self.feedback],
                     [v[idx] for v in self.sq_avg], pick(self.data_order), pick(self.lr_scale),
                     pick(self.avg), pick(self.halvings), pick(self.history), pick(self.noise), self.epoch)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["net"] = self.net.to_dict()
        d["data_order"] = [g.get_state() for g in self.data_order]
        d["noise"] = [g.get_state() for g in self.noise]
        return d

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> State:
        d = dict(d)
        move = lambda ts: [t.to(device) for t in ts]
        net = d["net"]
        W, b, act = move(net["weights"]), move(net["biases"]), net["activation"]
        d["net"] = ConvNet(W, b, act, ConvArch(**net["arch"])) if "arch" in net else MLP(W, b, act)
        d["feedback"], d["sq_avg"] = move(d["feedback"]), move(d["sq_avg"])
        d["data_order"] = [torch.Generator().set_state(s) for s in d["data_order"]]
        d["noise"] = [torch.Generator(device=device).set_state(s) for s in d["noise"]]
        return cls(**d)


def init_state(seeds: list[int], arch: MLPArch | ConvArch | list[int], activation: str, rule: Rule,
               device: torch.device, sq_init: float = 0.0) -> State:
    """Sample each seed on the CPU from its own generator, then stack and move once.
    `arch` is the network's shape; a list of layer sizes means an MLP. `sq_init`: RMSprop's
    mean square at step 0 (torch.optim: 0; torch/optim's rmsprop.lua: 1 from June to
    September 2016, the months the paper's runs were likely made)."""
    arch = MLPArch(tuple(arch)) if isinstance(arch, (list, tuple)) else arch
    zero = rule.zero_init and ACTIVATIONS[activation].zero_init_ok
    first = 1 if rule.mlp_first_random and isinstance(arch, MLPArch) else 0  # first zeroed layer
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        W, b = arch.sample(gen)
        B = rule.feedback(W, arch.hidden, arch.classes, gen)  # FA copies W here, before it is zeroed
        if zero:
            W, b = ([*ts[:first], *(torch.zeros_like(t) for t in ts[first:])] for ts in (W, b))
        per_seed.append((W, b, B))

    def stack(i: int) -> list[Tensor]:
        return [torch.stack(ts).to(device) for ts in zip(*(p[i] for p in per_seed))]

    net = arch.build(stack(0), stack(1), activation)
    n = len(seeds)
    return State(list(seeds), net, stack(2), [torch.full_like(p, sq_init) for p in net.params],
                 [torch.Generator().manual_seed(s + DATA_ORDER_OFFSET) for s in seeds],
                 [1.0] * n, [AVG_START] * n, [0] * n, [[] for _ in seeds],
                 [torch.Generator(device=device).manual_seed(s + NOISE_OFFSET) for s in seeds])
