"""`make bench`: seconds per MNIST-sized training epoch next to the FLOP-bound time.

The FLOP bound is (matmul FLOPs of one epoch, counted by torch's FlopCounterMode on a real
step) / (float32 GEMM throughput measured in this same run), for two throughputs: a large
square GEMM (the machine's peak) and a GEMM of the step's own shape (64 rows x 800 x 800),
which small batches cannot beat. Elementwise work (activations, RMSprop) is not counted, so
a ratio near 1 means the step is as fast as its matrix multiplies can be. Speed claims live
here, never in tests.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

from .data import Data
from .nets import layer_sizes
from .rules import RULES
from .train import Protocol, init_state, train_epoch, updates

FEATURES, CLASSES = 784, 10  # MNIST's shape; the values are random
PROTOCOL = Protocol(lr=1e-4, batch_size=64, max_epochs=1, compile=True)  # as `dfarun` trains MNIST


def matmul_gflops(m: int, k: int, n: int, device: torch.device, seconds: float = 2.0) -> float:
    """Best observed float32 GEMM throughput for [m, k] @ [k, n]."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * m * k * n / (time.perf_counter() - t))
    return best / 1e9


def step_flops(state, rule, data: Data, batch: int) -> float:
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
          device: torch.device, gflops: dict[str, float], examples: int = 60_000,
          protocol: Protocol = PROTOCOL) -> list[dict]:
    depth, width, activation = model
    batch = protocol.batch_size
    g = torch.Generator().manual_seed(0)
    data = Data(torch.rand(examples, FEATURES, generator=g).to(device),
                torch.randint(CLASSES, (examples,), generator=g).to(device),
                torch.rand(10, FEATURES, device=device), torch.zeros(10, dtype=torch.long, device=device))
    sizes = layer_sizes(FEATURES, depth, width, CLASSES)
    rows = []
    for method in methods:
        rule = RULES[method]
        for seeds in stacks:
            # BP's uniform init for every method: zero weights would make some products trivially cheap
            state = init_state(list(range(seeds)), sizes, activation, RULES["bp"], device)
            state.feedback = init_state(list(range(seeds)), sizes, activation, rule, device).feedback
            flops = step_flops(state, rule, data, batch) * examples / batch
            small = Data(data.x_train[: 20 * batch], data.y_train[: 20 * batch], data.x_test, data.y_test)
            train_epoch(state, small, rule, protocol)  # warm-up: compile, allocator, kernels
            _sync(device)
            t = time.perf_counter()
            train_epoch(state, data, rule, protocol)
            _sync(device)
            seconds = time.perf_counter() - t
            peak, small = (flops / (g * 1e9) for g in gflops.values())
            rows.append({"method": method, "seeds": seeds, "epoch s": seconds, "s / seed": seconds / seeds,
                         "GFLOP": flops / 1e9, "bound s (peak)": peak, "ratio (peak)": seconds / peak,
                         "bound s (64-row GEMM)": small, "ratio (64-row)": seconds / small})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", default="bp,dfa")
    p.add_argument("--seeds", default="1,10", help="stack sizes to time, comma-separated")
    p.add_argument("--examples", type=int, default=60_000, help="training examples per epoch")
    p.add_argument("--eager", action="store_true", help="time the eager optimizer (compile=false)")
    p.add_argument("--gemm-seconds", type=float, default=2.0, help="time spent measuring GEMM throughput")
    args = p.parse_args(argv)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    gflops = {"peak": matmul_gflops(2048, 2048, 2048, device, args.gemm_seconds),
              "64-row": matmul_gflops(64, 800, 800, device, args.gemm_seconds)}
    stacks = [int(s) for s in args.seeds.split(",")]
    protocol = replace(PROTOCOL, compile=not args.eager)
    rows = bench((2, 800, "tanh"), args.methods.split(","), stacks, device, gflops, args.examples, protocol)
    print(f"2x800_tanh, one epoch of {args.examples:,} x {FEATURES} (batch 64) on {name}, torch {torch.__version__}, "
          f"{'eager' if args.eager else 'compiled'} optimizer")
    print(f"float32 GEMM throughput measured in this run: {gflops['peak']:.1f} GFLOP/s at 2048^3 (peak), "
          f"{gflops['64-row']:.1f} GFLOP/s at 64x800x800 (the step's own shape)")
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
