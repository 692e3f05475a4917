"""Rule-agnostic MLPs with a leading seed dimension on every tensor (conv nets: conv.py).

Row-vector convention, as a batch is stored: a_i = h_{i-1} W_iᵀ + b_i, h_i = f(a_i),
h_0 = x, and the output layer a_y = h_L W_{L+1}ᵀ + b_{L+1} (logistic outputs, see train.py).
Shapes: x [S, B, D], W_i [S, n_i, n_{i-1}], b_i [S, n_i], where S is the number of seeds.
The network knows nothing of how it learns: rules.py turns the output error into
hidden-layer update directions, and `weight_updates` applies eq. (10) for every rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import torch
from torch import Tensor

from dfarun.engine.hyp import HYP

INIT_POWER = HYP["init"]["forward"].value  # uniform init bound = fan_in ** INIT_POWER (-0.5)


# --- activations ------------------------------------------------------------------

@dataclass(frozen=True)
class Activation:
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]   # f'(a), written in terms of h = f(a) so a need not be kept
    zero_init_ok: bool               # False: zero weights give f'=0 and the unit never learns


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(torch.tanh, lambda h: 1 - h * h, zero_init_ok=True),
    "logistic": Activation(torch.sigmoid, lambda h: h * (1 - h), zero_init_ok=True),
    "relu": Activation(torch.relu, lambda h: (h > 0).to(h.dtype), zero_init_ok=False),
}


# --- the network ------------------------------------------------------------------

class Pass(NamedTuple):
    hs: list[Tensor]    # inputs of each layer: h_0 = x, h_1 .. h_L (after dropout when it is on)
    dfs: list[Tensor]   # dh_i/da_i = f'(a_i), times the dropout mask when it is on
    a_y: Tensor         # output pre-activation [S, B, C]


@dataclass(frozen=True)
class Dropout:
    """One mini-batch's dropout: inverted (kept units scaled by 1/(1-p)), off at evaluation.

    The uniform draws behind the masks are made before the step (`draw`), from each seed's own
    generator, so a seed's masks, like its init and data order, do not depend on which seeds
    share its stack; the step itself (which torch.compile makes one graph, and a graph cannot
    draw from a torch.Generator) only thresholds them."""
    p_input: float
    p_hidden: float
    u: tuple[Tensor, ...]            # uniform [0, 1) draws, [S, B, n] per site: input, hidden layers
    p_conv: tuple[float, ...] = ()   # per conv block (conv nets); empty: p_hidden

    @classmethod
    def draw(cls, p_input: float, p_hidden: float, gens: tuple[torch.Generator, ...], batch: int,
             sizes: list[int], p_conv: tuple[float, ...] = ()) -> Dropout:
        """`sizes`: units per example at each site (input features, then net.hidden)."""
        u = tuple(torch.stack([torch.rand((batch, n), generator=g, device=g.device) for g in gens])
                  for n in sizes)
        return cls(p_input, p_hidden, u, p_conv)

    def mask(self, site: int, p: float, dtype: torch.dtype) -> Tensor:
        """[S, B, n]: 0 where a unit is dropped (probability p), else 1/(1-p)."""
        return (self.u[site] >= p).to(dtype) / (1 - p)


class Network(Protocol):
    """What the rules and the trainer may ask of a network (MLP here, conv.ConvNet).

    Layers are counted from 0: weights[k] takes hs[k] to a_k; the last is the output layer.
    Signals δh are [S, B, n]; δa is whatever layout the network computes in."""
    weights: list[Tensor]
    biases: list[Tensor]
    activation: str

    @property
    def params(self) -> list[Tensor]: ...            # weights + biases: the optimizer's order
    @property
    def hidden(self) -> list[int]: ...               # units of each hidden output (feedback fan-out)
    @property
    def widest(self) -> int: ...                     # sizes evaluation chunks

    def forward(self, x: Tensor, dropout: Dropout | None = None) -> Any:
        """activations, f'(a) and the output pre-activation a_y [S, B, C]"""
    def local(self, p: Any, k: int, dh: Tensor) -> Tensor:
        """δa_k from δh_k: hidden layer k's own backward step, δh ⊙ f'(a)"""
    def back(self, k: int, d: Tensor, M: Tensor) -> Tensor:
        """δh_{k-1} from δa_k: through layer k with M in place of its weights W_k"""
    def push(self, k: int, d: Tensor) -> Tensor:
        """δa_{k-1} W_kᵀ: a direction carried forward through layer k (IFA)"""
    def weight_updates(self, p: Any, deltas: list[Tensor]) -> list[Tensor]:
        """eq. (10) for every parameter, in the order of `params`"""
    def select(self, keep: Tensor) -> Network:
        """the sub-stack of seeds at positions `keep`"""
    def to_dict(self) -> dict: ...


@dataclass
class MLP:
    """A fully connected network; implements `Network`."""
    weights: list[Tensor]   # W_1 .. W_{L+1}; the last is the output layer
    biases: list[Tensor]    # b_1 .. b_{L+1}
    activation: str

    @property
    def params(self) -> list[Tensor]:
        return self.weights + self.biases

    @property
    def hidden(self) -> list[int]:
        """Units per example of each hidden layer's output (what a feedback matrix feeds)."""
        return [w.shape[1] for w in self.weights[:-1]]

    @property
    def widest(self) -> int:
        """Most units per example in any layer: sizes evaluation chunks."""
        return max(w.shape[1] for w in self.weights)

    def forward(self, x: Tensor, dropout: Dropout | None = None) -> Pass:
        """x [S, B, D] (or [B, D], shared by all seeds) -> activations, f'(a) and a_y [S, B, C]."""
        act = ACTIVATIONS[self.activation]
        if dropout is not None:
            x = x * dropout.mask(0, dropout.p_input, x.dtype)
        hs, dfs = [x], []
        for k, (W, b) in enumerate(zip(self.weights[:-1], self.biases[:-1])):
            h = act.f(_affine(hs[-1], W, b))
            df = act.df(h)
            if dropout is not None:  # the mask sits before the point where feedback enters
                keep = dropout.mask(k + 1, dropout.p_hidden, h.dtype)
                h, df = h * keep, df * keep
            hs.append(h)
            dfs.append(df)
        return Pass(hs, dfs, _affine(hs[-1], self.weights[-1], self.biases[-1]))

    def local(self, p: Pass, k: int, dh: Tensor) -> Tensor:
        return dh * p.dfs[k]

    def back(self, k: int, d: Tensor, M: Tensor) -> Tensor:
        return torch.bmm(d, M)

    def push(self, k: int, d: Tensor) -> Tensor:
        return torch.bmm(d, self.weights[k].transpose(1, 2))

    def weight_updates(self, p: Pass, deltas: list[Tensor]) -> list[Tensor]:
        return weight_updates(p.hs, deltas)

    def select(self, keep: Tensor) -> MLP:
        """The sub-stack of seeds at positions `keep`."""
        return MLP([w[keep] for w in self.weights], [b[keep] for b in self.biases], self.activation)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "biases": self.biases, "activation": self.activation}


def _affine(h: Tensor, W: Tensor, b: Tensor) -> Tensor:
    if h.dim() == 2:  # evaluation input shared by every seed: broadcast instead of copying
        return torch.matmul(h, W.transpose(1, 2)) + b.unsqueeze(1)
    return torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))


def weight_updates(hs: list[Tensor], deltas: list[Tensor]) -> list[Tensor]:
    """Eq. (10) summed over the batch: dW_i = δa_iᵀ h_{i-1}, then db_i = Σ δa_i (same order as MLP.params).

    `deltas` = [δa_1, ..., δa_L, e]; these are gradients (descend with -lr)."""
    dW = [torch.bmm(d.transpose(1, 2), h) for d, h in zip(deltas, hs)]
    db = [d.sum(1) for d in deltas]
    return dW + db


# --- initialisation (one seed at a time, so a seed's init never depends on its neighbours) --

@dataclass(frozen=True)
class MLPArch:
    """An MLP's shape, as conv.ConvArch gives a conv net's: what init needs to sample and build it."""
    sizes: tuple[int, ...]   # input, hidden..., output units

    @property
    def hidden(self) -> list[int]:
        return list(self.sizes[1:-1])

    @property
    def classes(self) -> int:
        return self.sizes[-1]

    def sample(self, gen: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        return sample_layers(list(self.sizes), gen)

    def build(self, weights: list[Tensor], biases: list[Tensor], activation: str) -> MLP:
        return MLP(weights, biases, activation)


def layer_sizes(n_in: int, depth: int, width: int, n_out: int) -> list[int]:
    return [n_in] + [width] * depth + [n_out]


def uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def sample_layers(sizes: list[int], gen: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
    """Weights and biases uniform in ±1/sqrt(fan_in) (the paper's and the author's rule)."""
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = fan_in ** INIT_POWER
        weights.append(uniform((fan_out, fan_in), bound, gen))
        biases.append(uniform((fan_out,), bound, gen))
    return weights, biases


def dropout_on(p_input: float, p_hidden: float, p_conv: tuple[float, ...]) -> bool:
    """Any unit dropped at all (p_conv too: a conv net may drop only after its conv blocks)."""
    return bool(p_input or p_hidden or any(p_conv))
