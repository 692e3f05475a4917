"""`make bench`: seconds per MNIST-sized training epoch next to the FLOP-bound time.

The FLOP bound is (matmul FLOPs of one epoch, counted by torch's FlopCounterMode on a real
step) / (matmul throughput measured in this same run on a large square float32 GEMM).
Elementwise work (activations, RMSprop) is not in the count, so a ratio near 1 means the
step is as fast as its matrix multiplies can be. Speed claims live here, never in tests.
"""
from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

from .data import Data
from .nets import layer_sizes
from .rules import RULES
from .train import init_state, train_epoch, updates

N_TRAIN, FEATURES, CLASSES = 60_000, 784, 10  # MNIST's shape; the values are random
LR = 1e-4  # RMSprop step (MNIST's); the speed does not depend on it


def matmul_gflops(n: int, device: torch.device, seconds: float = 2.0) -> float:
    """Best observed float32 GEMM throughput on n x n matrices."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best / 1e9


def step_flops(state, rule, data: Data, batch: int) -> int:
    """Matmul FLOPs of one step on a full batch, as torch counts them."""
    idx = torch.arange(batch, device=data.x_train.device).expand(len(state.seeds), batch)
    target = torch.eye(CLASSES, device=data.x_train.device)[data.y_train[idx]]
    with FlopCounterMode(display=False) as counter:
        updates(state.net, state.feedback, rule, data.x_train[idx], target)
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model: tuple[int, int, str], methods: list[str], stacks: list[int],
          device: torch.device, gflops: float, batch: int = 64) -> list[dict]:
    depth, width, activation = model
    g = torch.Generator().manual_seed(0)
    data = Data(torch.rand(N_TRAIN, FEATURES, generator=g).to(device),
                torch.randint(CLASSES, (N_TRAIN,), generator=g).to(device),
                torch.rand(10, FEATURES, device=device), torch.zeros(10, dtype=torch.long, device=device))
    sizes = layer_sizes(FEATURES, depth, width, CLASSES)
    rows = []
    for method in methods:
        rule = RULES[method]
        for seeds in stacks:
            # BP's uniform init for every method: zero weights would make some products trivially cheap
            state = init_state(list(range(seeds)), sizes, activation, RULES["bp"], device)
            state.feedback = init_state(list(range(seeds)), sizes, activation, rule, device).feedback
            flops = step_flops(state, rule, data, batch) * N_TRAIN / batch
            small = Data(data.x_train[: 20 * batch], data.y_train[: 20 * batch], data.x_test, data.y_test)
            train_epoch(state, small, rule, LR, batch)  # warm-up: allocator, kernels
            _sync(device)
            t = time.perf_counter()
            train_epoch(state, data, rule, LR, batch)
            _sync(device)
            seconds = time.perf_counter() - t
            bound = flops / (gflops * 1e9)
            rows.append({"method": method, "seeds": seeds, "epoch s": seconds,
                         "s / seed": seconds / seeds, "FLOP bound s": bound,
                         "ratio": seconds / bound, "GFLOP/epoch": flops / 1e9})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", default="bp,dfa")
    p.add_argument("--seeds", default="1,10", help="stack sizes to time, comma-separated")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    gflops = matmul_gflops(2048, device)
    stacks = [int(s) for s in args.seeds.split(",")]
    rows = bench((2, 800, "tanh"), args.methods.split(","), stacks, device, gflops)
    print(f"2x800_tanh, one epoch of {N_TRAIN:,} x {FEATURES} (batch 64) on {name}, torch {torch.__version__}")
    print(f"matmul throughput (2048^3 float32, measured in this run): {gflops:.1f} GFLOP/s")
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
