"""The paper's convolutional network (Tables 2 and 3), every seed in one grouped convolution.

"As in the dropout paper but tanh" (docs/protocol.md): blocks of conv k x k (stride 1, padding
k//2) -> f -> max-pool 3x3 stride 2 with 96, 128 and 256 channels, then fully connected
hidden layers (2 x 2048) and the logistic output layer. The same interface as nets.MLP, so
the rules and the trainer do not know which network they train. Hidden layer k is conv
block k's pooled output (where DFA injects its error), then each fully connected layer.

Layout: a conv block computes in [B, S*C, H, W], seed s owning channels s*C .. s*C+C-1, so
one convolution with groups=S runs every seed on its own input and kernels. Signals δh
cross to the rules flat, [S, B, C*H*W] in (C, H, W) order, as for the MLP; the local
backward step (`local`) reshapes them, routes them through the max-pool to the unit that
won it, and multiplies by f'(a). Weights: conv W_k [S, C_out, C_in, k, k], b_k [S, C_out].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dfarun.engine import nets
from dfarun.engine.nets import ACTIVATIONS, Dropout, uniform


# --- shape -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvArch:
    in_shape: tuple[int, int, int]   # one input image, (C, H, W)
    channels: tuple[int, ...]        # output channels of each conv block
    fc: tuple[int, ...]              # fully connected hidden layers after the blocks
    classes: int
    kernel: int = 5                  # odd: padding kernel // 2 keeps H and W
    pool: int = 3                    # max-pool window, no padding, floor mode
    pool_stride: int = 2

    def blocks(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of each block's pooled output: 32x32 -> 15 -> 7 -> 3 for CIFAR."""
        _, h, w = self.in_shape
        out = []
        for c in self.channels:
            h, w = ((n - self.pool) // self.pool_stride + 1 for n in (h, w))
            out.append((c, h, w))
        return out

    @property
    def hidden(self) -> list[int]:
        """Units per example of each hidden layer's output (what a feedback matrix feeds)."""
        return [prod(b) for b in self.blocks()] + list(self.fc)

    def sample(self, gen: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Uniform ±1/sqrt(fan_in) for every layer, fan_in = C_in * k * k for a kernel."""
        weights, biases = [], []
        c_in, k = self.in_shape[0], self.kernel
        for c in self.channels:
            bound = (c_in * k * k) ** nets.INIT_POWER
            weights.append(uniform((c, c_in, k, k), bound, gen))
            biases.append(uniform((c,), bound, gen))
            c_in = c
        W, b = nets.sample_layers([self.hidden[len(self.channels) - 1], *self.fc, self.classes], gen)
        return weights + W, biases + b

    def build(self, weights: list[Tensor], biases: list[Tensor], activation: str) -> ConvNet:
        return ConvNet(weights, biases, activation, self)


# --- the network -----------------------------------------------------------------------------

class ConvPass(NamedTuple):
    hs: list[Tensor]     # input of each layer: conv blocks [B, S*C, H, W], fc layers [S, B, n]
    dfs: list[Tensor]    # f'(a) of each hidden layer (conv blocks: before pooling)
    a_y: Tensor          # output pre-activation [S, B, C]
    pools: list[Tensor]  # which input unit won each pooling window, [B, S*C, H', W']
    masks: list[Tensor | None]  # dropout mask on each block's pooled output


@dataclass
class ConvNet:
    """Conv blocks, then fully connected layers; implements nets.Network."""
    weights: list[Tensor]
    biases: list[Tensor]
    activation: str
    arch: ConvArch

    @property
    def params(self) -> list[Tensor]:
        return self.weights + self.biases

    @property
    def hidden(self) -> list[int]:
        return self.arch.hidden

    @property
    def widest(self) -> int:
        """Most units per example in any layer (a conv block's, before pooling): sizes evaluation chunks."""
        sides = [self.arch.in_shape[1:]] + [b[1:] for b in self.arch.blocks()]
        return max([c * h * w for c, (h, w) in zip(self.arch.channels, sides)] + list(self.arch.fc))

    @property
    def n_conv(self) -> int:
        return len(self.arch.channels)

    def _conv(self, h: Tensor, k: int, groups: int) -> Tensor:
        W, b = self.weights[k], self.biases[k]
        return F.conv2d(h, W.flatten(0, 1), b.flatten(), padding=self.arch.kernel // 2, groups=groups)

    def forward(self, x: Tensor, dropout: Dropout | None = None) -> ConvPass:
        """x [S, B, D] (or [B, D], shared by all seeds), D = C*H*W in (C, H, W) order."""
        act = ACTIVATIONS[self.activation]
        S, shared = self.weights[0].shape[0], x.dim() == 2
        B = x.shape[-2]
        if dropout is not None:
            x = x * dropout.mask(0, dropout.p_input, x.dtype)
        C, H, W = self.arch.in_shape
        h = x.view(B, C, H, W) if shared else x.reshape(S, B, C, H, W).transpose(0, 1).reshape(B, S * C, H, W)
        hs, dfs, pools, masks = [h], [], [], []
        for k in range(self.n_conv):
            z = act.f(self._conv(h, k, groups=1 if shared and k == 0 else S))  # shared input: no copies
            dfs.append(act.df(z))
            h, idx = F.max_pool2d(z, self.arch.pool, self.arch.pool_stride, return_indices=True)
            mask = None
            if dropout is not None:  # on the pooled output, before the point where feedback enters
                p = dropout.p_conv[k] if dropout.p_conv else dropout.p_hidden
                mask = self._blocks(dropout.mask(k + 1, p, h.dtype), h.shape)  # seeds are channel groups here
                h = h * mask
            pools.append(idx)
            masks.append(mask)
            hs.append(h)
        hs[-1] = h.reshape(B, S, -1).transpose(0, 1)  # the first fc layer takes [S, B, C*H*W]
        for k, (W, b) in enumerate(zip(self.weights[self.n_conv:-1], self.biases[self.n_conv:-1]), self.n_conv):
            z = act.f(nets._affine(hs[-1], W, b))
            df = act.df(z)
            if dropout is not None:
                keep = dropout.mask(k + 1, dropout.p_hidden, z.dtype)
                z, df = z * keep, df * keep
            hs.append(z)
            dfs.append(df)
        return ConvPass(hs, dfs, nets._affine(hs[-1], self.weights[-1], self.biases[-1]), pools, masks)

    def local(self, p: ConvPass, k: int, dh: Tensor) -> Tensor:
        """δa_k from δh_k: through the dropout mask, the pooling routing (summed where
        overlapping windows share a winner) and f'(a_k)."""
        if k >= self.n_conv:
            return dh * p.dfs[k]
        idx, df = p.pools[k], p.dfs[k]
        g = self._blocks(dh, idx.shape)
        if p.masks[k] is not None:
            g = g * p.masks[k]
        up = torch.zeros(df.shape[:2] + (df.shape[2] * df.shape[3],), dtype=g.dtype, device=g.device)
        return up.scatter_add_(2, idx.flatten(2), g.flatten(2)).view(df.shape) * df

    @staticmethod
    def _blocks(t: Tensor, shape: torch.Size) -> Tensor:
        """[S, B, C*H*W] (a signal's or a mask's per-seed layout) -> a block's [B, S*C, H, W]."""
        return t.transpose(0, 1).reshape(shape)

    def back(self, k: int, d: Tensor, M: Tensor) -> Tensor:
        """δh_{k-1} [S, B, n] = the input gradient of layer k at δa_k, with M in place of W_k."""
        if k >= self.n_conv:
            return torch.bmm(d, M)
        S = M.shape[0]
        g = F.conv_transpose2d(d, M.flatten(0, 1), padding=self.arch.kernel // 2, groups=S)
        return g.reshape(g.shape[0], S, -1).transpose(0, 1)

    def push(self, k: int, d: Tensor) -> Tensor:
        raise NotImplementedError("IFA's forward-propagated direction is defined for MLPs only")

    def weight_updates(self, p: ConvPass, deltas: list[Tensor]) -> list[Tensor]:
        """Eq. (10) for conv kernels: the weight gradient of each grouped convolution at δa_k."""
        dW, db = [], []
        for k in range(self.n_conv):
            W = self.weights[k]
            S, c_out = W.shape[:2]
            gW = torch.nn.grad.conv2d_weight(p.hs[k], (S * c_out, *W.shape[2:]), deltas[k],
                                             padding=self.arch.kernel // 2, groups=S)
            dW.append(gW.view_as(W))
            db.append(deltas[k].sum((0, 2, 3)).view(S, c_out))
        fc = nets.weight_updates(p.hs[self.n_conv:], deltas[self.n_conv:])
        n_fc = len(fc) // 2
        return dW + fc[:n_fc] + db + fc[n_fc:]

    def select(self, keep: Tensor) -> ConvNet:
        return ConvNet([w[keep] for w in self.weights], [b[keep] for b in self.biases], self.activation, self.arch)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "biases": self.biases, "activation": self.activation,
                "arch": asdict(self.arch)}
