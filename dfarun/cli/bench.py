"""`make bench`: training speed next to the FLOP-bound time, and what the paper's tables cost.

The FLOP bound is (matmul and convolution FLOPs of the work, counted by torch's
FlopCounterMode on a real step) / (float32 GEMM throughput measured in this same run), for two
throughputs: a large square GEMM (the machine's peak) and a GEMM of the MLP step's own shape
(64 rows x 800 x 800), which small batches cannot beat. Elementwise work (activations,
pooling, RMSprop) is not counted, so a ratio near 1 means the step is as fast as its matrix
products can be. Speed claims live here, never in tests. The bench runs on the threads a job
would (DFARUN_THREADS, else the free cores: run/threads.py), and on a CPU shows an epoch on an
idle machine beside one with a CPU-bound process running (bench_speed.py).

    python -m dfarun.cli.bench                       # 2x800 tanh epochs, conv_tanh images/s, idle vs busy
    python -m dfarun.cli.bench --estimate            # + hours for each table at the paper profile
    python -m dfarun.cli.bench --skip mlp,conv,busy --break-even 2x800:dfa:1   # compile=auto's break-even
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from math import prod
from pathlib import Path

import torch
from tabulate import tabulate

from dfarun.cli.bench_speed import break_even_rows, busy_rows
from dfarun.cli.bench_step import CIFAR, CONV, PROTOCOL, random_data, sync, time_epoch
from dfarun.engine.data import Data
from dfarun.engine.hyp import IMAGE_SHAPES
from dfarun.engine.nets import MLPArch, layer_sizes
from dfarun.engine.step import Step
from dfarun.engine.train import Protocol
from dfarun.report.cells import split, table_grids, table_rows
from dfarun.run.threads import choose

TRAIN_SIZE = {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}


def matmul_gflops(m: int, k: int, n: int, device: torch.device, seconds: float = 2.0) -> float:
    """Best observed float32 GEMM throughput for [m, k] @ [k, n]."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * m * k * n / (time.perf_counter() - t))
    return best / 1e9


def bench_rows(arch, methods: list[str], stacks: list[int], data: Data, protocol: Protocol,
               gflops: dict[str, float], per_image: bool = False, repeats: int = 1) -> list[dict]:
    rows = []
    for method in methods:
        for seeds in stacks:
            times, flops = time_epoch(arch, method, seeds, data, protocol, repeats)
            seconds = min(times)  # the fastest: what the machine can do, not what a neighbour took
            # one line as soon as it is timed: a bench stopped part-way still tells what it measured
            print(f"  {method} x{seeds} seeds: {seconds:.3f} s for {data.x_train.shape[0]:,} examples"
                  f"{' (compiling failed: eager)' if protocol.compile and Step.failed else ''}", flush=True)
            peak, small = (flops / (g * 1e9) for g in gflops.values())
            n = data.x_train.shape[0]
            row = {"method": method, "seeds": seeds}
            if per_image:
                row |= {"images/s, all seeds": seeds * n / seconds, "images/s per seed": n / seconds,
                        "CIFAR epoch s (est.)": seconds * TRAIN_SIZE["cifar10"] / n}
            else:
                row |= {"epoch s": seconds, "s / seed": seconds / seeds}
            if repeats > 1:  # how much the machine itself varied within this row
                row["slowest / fastest"] = max(times) / seconds
            row |= {"GFLOP": flops / 1e9, "bound s (peak)": peak, "ratio (peak)": seconds / peak,
                    "bound s (64-row GEMM)": small, "ratio (64-row)": seconds / small}
            one = next((r for r in rows if r["method"] == method and r["seeds"] == 1), None)
            if per_image and one and seeds > 1:
                # the same seeds one after the other run at the 1-seed rate: does stacking pay?
                row["stacked / one at a time"] = row["images/s, all seeds"] / one["images/s, all seeds"]
            rows.append(row)
    return rows


# --- what a paper table costs ---------------------------------------------------------------

UPPER = "hours (10 seeds, each row's epoch limit; upper bound)"
RECORDED = "hours (epochs as recorded; else the limit)"


def estimate_tables(device: torch.device, examples: int, protocol: Protocol, tables=(1, 2, 3),
                    on_cell=lambda table, row, method, hours: None, epochs: dict | None = None,
                    skip_rows: tuple[str, ...] = (), only_rows: tuple[str, ...] = ()) -> list[dict]:
    """Hours to train each table's grid at the paper profile (10 stacked seeds, 300 epochs, or
    a row's shorter train_epochs), from one timed epoch per cell on `examples` examples, scaled
    to the full training set. `on_cell` hears each cell's hours as soon as it is timed (a run
    stopped part-way still tells what it measured).
    An upper bound: seeds that converge early stop early. `epochs` (recorded_epochs: the most
    epochs any seed of a cell ran, by (data set, paper row, method)) adds a second figure, the
    hours at those epochs, for the cells the records have (the rest at their limit).
    `only_rows`: only these rows (all when empty); `skip_rows`: not these."""
    from dfarun.config.schema import conv_dropout, epoch_limit
    from dfarun.run.runner import architecture
    from dfarun.config.schema import row_label

    grids = table_grids(tables)
    cells = table_rows(tables, keep=lambda row: row not in skip_rows and (not only_rows or row in only_rows))
    out = []
    for table, rows in cells.items():
        methods = grids[table].method.split(",")
        seconds = recorded = 0.0
        for row, cfg in rows:
            shape = IMAGE_SHAPES[cfg.dataset.name]
            data = random_data(examples, prod(shape), cfg.dataset.classes, device, shape)
            arch = architecture(cfg, data)
            p = replace(protocol, p_input=cfg.reg.p_input, p_hidden=cfg.reg.p_hidden,
                        p_conv=conv_dropout(cfg), eps=cfg.reg.eps)
            full = TRAIN_SIZE[cfg.dataset.name] - (10_000 if cfg.val else 0)
            for method in methods:
                (epoch,), _ = time_epoch(arch, method, len(cfg.seeds), data, p)
                per_epoch = epoch * full / examples
                on_cell(table, row, method, per_epoch * epoch_limit(cfg) / 3600)
                seconds += per_epoch * epoch_limit(cfg)
                if epochs is not None:
                    recorded += per_epoch * epochs.get((cfg.dataset.name, row_label(cfg), method), epoch_limit(cfg))
        out.append({"table": table, "cells": len(rows) * len(methods), UPPER: seconds / 3600}
                   | ({RECORDED: recorded / 3600} if epochs is not None else {}))
    return out


def recorded_epochs(stores: list[str]) -> dict[tuple[str, str, str], int]:
    """(data set, paper row, method) -> the most epochs any seed of that cell ran, from the run
    records in `stores` (the experiment each table shows). A stacked job runs as long as its
    longest seed, so this is what the cell cost, at the most."""
    from dfarun.report import records

    kept, _ = split(records.read(map(Path, stores)))  # the runs the tables count
    return {(c[0], c[1], c[2]): max(r.epochs for r in rs) for c, rs in records.cells(kept).items() if not c[3]}


# --- command line ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--methods", default="bp,dfa")
    p.add_argument("--seeds", default="1,10", help="2x800 stack sizes to time, comma-separated")
    p.add_argument("--conv-seeds", default="1,4", help="conv_tanh stack sizes to time")
    p.add_argument("--examples", type=int, default=60_000, help="2x800: training examples per epoch")
    p.add_argument("--conv-examples", type=int, default=5_000 if gpu else 256,
                   help="conv_tanh: images timed (the rate is scaled to a CIFAR epoch)")
    p.add_argument("--estimate", action="store_true", help="also time every table cell and print hours")
    p.add_argument("--estimate-examples", type=int, default=5_000 if gpu else 256,
                   help="examples timed per table cell for --estimate")
    p.add_argument("--tables", default="1,2,3", help="tables to estimate, comma-separated")
    p.add_argument("--rows", default="", help="--estimate: only these rows, comma-separated (default: all)")
    p.add_argument("--skip-rows", default="", help="--estimate: rows to leave out, comma-separated (e.g. 100x240_tanh)")
    p.add_argument("--epochs-from", nargs="+", metavar="STORE", default=None,
                   help="--estimate: also the hours at the epochs the run records in these stores ran (the "
                        "longest seed of each cell; cells without records at their limit)")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: mlp, conv, busy")
    p.add_argument("--break-even", default="", metavar="CASES",
                   help="compile=auto's break-even for these cases, comma-separated: DEPTHxWIDTH:METHOD:SEEDS[:STEPS] "
                        "or conv:METHOD:SEEDS[:STEPS], e.g. 2x800:dfa:1 (each compiles twice, in child processes)")
    p.add_argument("--break-even-steps", type=int, default=300, help="mini-batches timed per --break-even case")
    p.add_argument("--eager", action="store_true", help="time the eager step (compile=false)")
    p.add_argument("--repeats", type=int, default=3,
                   help="epochs timed per row; the fastest is shown (this machine's own speed, not a neighbour's)")
    p.add_argument("--gemm-seconds", type=float, default=2.0, help="time spent measuring GEMM throughput")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats}: expected an int >= 1")
    if not args.tables or not set(args.tables.split(",")) <= {"1", "2", "3"}:
        p.error(f"--tables={args.tables}: expected table numbers from 1, 2, 3, comma-separated")
    tables = [int(t) for t in args.tables.split(",")]
    only, skip_rows = (tuple(filter(None, a.split(","))) for a in (args.rows, args.skip_rows))
    # any table's row may be named (the accelerator run passes one argument set to each table in turn)
    known = list(dict.fromkeys(row for grid in table_grids((1, 2, 3)).values() for row in grid.row.split(",")))
    for flag, names in (("--rows", only), ("--skip-rows", skip_rows)):
        if unknown := sorted(set(names) - set(known)):
            p.error(f"{flag}={','.join(unknown)}: not a row of tables 1-3; rows: {', '.join(known)}")
    if missing := [d for d in args.epochs_from or () if not Path(d).is_dir()]:
        p.error(f"--epochs-from={missing[0]}: no such directory (a store of run records)")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    threads, why = choose(default_threads)  # as a job chooses them
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads ({why})"
    gflops = {"peak": matmul_gflops(2048, 2048, 2048, device, args.gemm_seconds),
              "64-row": matmul_gflops(64, 800, 800, device, args.gemm_seconds)}
    protocol = replace(PROTOCOL, compile=not args.eager)
    methods, skip = args.methods.split(","), args.skip.split(",")
    spread = " ('slowest / fastest': how much they varied)" if args.repeats > 1 else ""
    print(f"{name}, torch {torch.__version__}, {'eager' if args.eager else 'compiled'} step, batch 64, "
          f"fastest of {args.repeats} epoch(s) per row{spread}")
    print(f"float32 GEMM throughput measured in this run: {gflops['peak']:.1f} GFLOP/s at 2048^3 (peak), "
          f"{gflops['64-row']:.1f} GFLOP/s at 64x800x800 (the MLP step's own shape)\n")
    if "mlp" not in skip:
        data = random_data(args.examples, 784, 10, device)
        rows = bench_rows(MLPArch(tuple(layer_sizes(784, 2, 800, 10))), methods,
                          [int(s) for s in args.seeds.split(",")], data, protocol, gflops, repeats=args.repeats)
        print(f"2x800_tanh, one epoch of {args.examples:,} x 784")
        print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github") + "\n")
    if "conv" not in skip:
        data = random_data(args.conv_examples, 3072, 10, device, CIFAR)
        rows = bench_rows(CONV, methods, [int(s) for s in args.conv_seeds.split(",")], data, protocol,
                          gflops, per_image=True, repeats=args.repeats)
        print(f"conv_tanh on 3x32x32 images, {args.conv_examples:,} timed")
        print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))
        print(f"a job's default (seed_stack=null) on {device.type}: conv seeds "
              f"{'one at a time' if device.type == 'cpu' else 'all stacked'}\n")
    if device.type == "cpu" and "busy" not in skip:
        examples = min(args.examples, 20_000)
        data, eager = random_data(examples, 784, 10, device), replace(PROTOCOL, compile=False)
        mlp = MLPArch(tuple(layer_sizes(784, 2, 800, 10)))

        def epoch(n: int) -> float:
            torch.set_num_threads(n)
            return min(time_epoch(mlp, "dfa", 1, data, eager, repeats=2)[0])
        print(f"Threads: an idle machine and a busy one ({examples:,} examples timed per epoch)")
        print(tabulate(busy_rows(epoch, examples, default_threads, why), headers="keys", floatfmt=".2f",
                       tablefmt="github") + "\n")
    if args.break_even:
        print(f"compile=auto: where compiling pays on {device.type} (cold: empty compile cache; warm: filled)")
        rows = break_even_rows(args.break_even.split(","), args.break_even_steps, threads, device.type)
        print(tabulate(rows, headers="keys", floatfmt=",.2f", tablefmt="github") + "\n")
    if args.estimate:
        print(f"Paper-profile cost per cell, as each is timed ({'eager' if args.eager else 'compiled'} step)")
        epochs = recorded_epochs(args.epochs_from) if args.epochs_from else None
        say = lambda t, row, m, hours: print(f"  table {t} {row:<16} {m:<4} {hours:6.3f} h", flush=True)
        rows = estimate_tables(device, args.estimate_examples, protocol, tables, on_cell=say, epochs=epochs,
                               skip_rows=skip_rows, only_rows=only)
        print(f"Paper-profile cost per table ({args.estimate_examples:,} examples timed per cell)")
        print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
