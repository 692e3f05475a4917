"""`make bench`'s measurements behind two choices a job makes for its speed.

Threads (run/threads.py): a 2x800 DFA epoch, eager, on an idle machine and beside one
CPU-bound process of bench's own, with torch's default threads (every core) and with the
threads a job would choose there.

Compiling (compile=auto, engine/step.py's COMPILE_PAYS_AFTER): for each case, the seconds
torch.compile takes before the first step (cold: an empty compile cache, as on a fresh
machine; warm: the cache a first job of the same shapes left), the seconds per step eager and
compiled, and the break-even: compile seconds / seconds saved per step. Each case runs in a
child process of its own, so that nothing compiled before it is reused (`--break-even`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from dfarun.run import threads as job_threads

MNIST_STEPS = 938  # mini-batches of 64 in a 60,000-example epoch


# --- threads: idle and busy ---------------------------------------------------------------------

def busy_rows(time_epoch, examples: int, default: int, why: str) -> list[dict]:
    """Rows for one 2x800 DFA epoch of `examples` (scaled to 60,000 in the table), with torch's
    `default` threads (every physical core) and with the threads a job would choose: on the
    machine as it is (idle, under `make bench` through a quiet machine), and beside a CPU-bound
    process. `time_epoch(threads)` times one epoch; `why`: why the bench runs on its threads."""
    chosen = torch.get_num_threads()
    rows = [_row("idle, torch's default (every core)", default, time_epoch(default) * 60_000 / examples)]
    if chosen != default:
        rows.append(_row(f"idle, the bench's threads ({why})", chosen, time_epoch(chosen) * 60_000 / examples))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy
    try:
        time.sleep(0.5)  # let it take its core before the cores are sampled
        choice, reason = job_threads.choose(default)
        for threads, label in ((default, "torch's default (every core)"), (choice, f"a job's choice ({reason})")):
            rows.append(_row(f"1 CPU-bound process beside it, {label}", threads, time_epoch(threads) * 60_000 / examples))
    finally:
        burner.kill()
        burner.wait()
    torch.set_num_threads(chosen)
    return rows


def _row(case: str, threads: int, seconds: float) -> dict:
    return {"case": case, "threads": threads, "2x800 DFA epoch s (eager, 60,000 examples)": seconds}


# --- compiling: the break-even ------------------------------------------------------------------

def break_even_rows(cases: list[str], steps: int, threads: int, device: str = "cpu") -> list[dict]:
    """One row per case "DEPTHxWIDTH:METHOD:SEEDS[:STEPS]" (an MLP on 784 inputs) or
    "conv:METHOD:SEEDS[:STEPS]" (conv_tanh on 3x32x32), each measured cold and then warm in
    child processes, over STEPS mini-batches (else `steps`)."""
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="dfarun-bench-inductor-") as cache:
            cold, warm = (_child(case, steps, threads, cache, device) for _ in range(2))
        saved = cold["eager_s"] - cold["compiled_s"]
        row = {"case": case, "eager ms/step": 1e3 * cold["eager_s"], "compiled ms/step": 1e3 * cold["compiled_s"],
               "compile s (cold)": cold["compile_s"], "compile s (warm)": warm["compile_s"]}
        for kind, seconds in (("cold", cold["compile_s"]), ("warm", warm["compile_s"])):
            row[f"break-even steps ({kind})"] = seconds / saved if saved > 0 else float("inf")
        row["= MNIST epochs (cold)"] = row["break-even steps (cold)"] / MNIST_STEPS
        print(f"  {case}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items() if k != "case"), flush=True)
        rows.append(row)
    return rows


def _child(case: str, steps: int, threads: int, cache: str, device: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, DFARUN_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-m", "dfarun.cli.bench_speed", case, str(steps), device], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"break-even case {case} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(case: str, steps: int, device: str) -> dict:
    """In the child: seconds per step eager and compiled (the faster of two epochs of `steps`
    mini-batches of 64), and the compile seconds of every graph a job of that many seeds
    compiles (the first stack; a dynamic stack size when a seed leaves; a stack of one)."""
    from dfarun.cli.bench_step import CIFAR, CONV, PROTOCOL, random_data, sync, warm_up
    from dfarun.engine.nets import MLPArch, layer_sizes
    from dfarun.engine.rules import RULES
    from dfarun.engine.state import init_state
    from dfarun.engine.step import Step
    from dfarun.engine.train import train_epoch

    model, method, seeds, *timed = case.split(":")
    seeds, steps, dev = int(seeds), int(timed[0]) if timed else steps, torch.device(device)
    if model == "conv":
        arch, data = CONV, random_data(PROTOCOL.batch_size * steps, 3072, 10, dev, CIFAR)
    else:
        depth, width = (int(n) for n in model.split("x"))
        arch = MLPArch(tuple(layer_sizes(784, depth, width, 10)))
        data = random_data(PROTOCOL.batch_size * steps, 784, 10, dev)
    torch.set_num_threads(int(os.environ["DFARUN_THREADS"]))
    rule, protocol, out = RULES[method], PROTOCOL, {}
    for compiled in (False, True):
        state = init_state(list(range(seeds)), arch, "tanh", RULES["bp"], dev)  # uniform: no trivial products
        state.feedback = init_state(list(range(seeds)), arch, "tanh", rule, dev).feedback
        step = Step(compiled, dev)
        with torch.no_grad():
            for stack in [seeds, seeds - 1, 1][:3 if seeds > 2 else seeds]:  # the graphs a job compiles
                warm_up(step, state.select(list(range(stack))), data, rule, protocol, calls=1)
            warm_up(step, state, data, rule, protocol, calls=2)
            times = []
            for _ in range(2):  # the faster epoch: this machine's speed, not a neighbour's
                sync(dev)
                start = time.perf_counter()
                train_epoch(state, data, rule, protocol, step=step)
                sync(dev)
                times.append((time.perf_counter() - start) / steps)
            out["compiled_s" if compiled else "eager_s"] = min(times)
        if compiled:
            out["compile_s"] = step.compile_seconds
    return out


if __name__ == "__main__":  # the child of break_even_rows
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
