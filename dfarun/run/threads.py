"""How many CPU threads a job's torch uses: the cores that are free when the job starts.

Torch splits each CPU op over a team of OpenMP threads that wait for one another at its end,
so the team goes at the pace of its slowest thread. A thread that shares its core with another
CPU-bound process gets half of that core, and the whole team waits for it, spinning: a busy
core then costs far more than its fair share. On the 2-core machine, a 2x800 DFA epoch (eager)
with one CPU-bound process beside it took 16.5-41.3 s on 2 threads and 5.1-5.2 s on 1; idle,
2.9 s on 2 threads and 4.9 s on 1 (`make bench` shows both). Work at a lower priority (a
positive nice) yields its core to a job that is not niced itself, so that core counts as free.

`DFARUN_THREADS` wins over the choice; a launcher's cores per job (cpus_per_task) come next.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from dfarun.errors import DfarunError

SAMPLE_SECONDS = 0.2  # how long the cores are watched before a job picks its threads
SLACK = 0.3           # cores: a core at least 70% idle counts as free (the others' bursts, the sampling)


def env_threads() -> int | None:
    """$DFARUN_THREADS, checked; None when it is unset or empty."""
    threads = os.environ.get("DFARUN_THREADS", "")
    if not threads:
        return None
    # more threads than some small multiple of the cores is a typo; OpenMP crashes on huge counts
    most = 4 * (os.cpu_count() or 1)
    if not threads.isdigit() or not 1 <= int(threads) <= most:
        raise DfarunError(f"DFARUN_THREADS={threads!r}: expected an int from 1 to {most} (4 x this machine's cores)")
    return int(threads)


def free_cores(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores this process may use that no other process kept busy over the next `seconds`
    (from the kernel's per-core counters; this process's own work counts as free). None where
    they cannot be read (not Linux)."""
    allowed = _allowed()
    niced = os.getpriority(os.PRIO_PROCESS, 0) > 0 if hasattr(os, "getpriority") else True
    before, own_before = _cpu_times(stat, niced), _own_seconds()
    if before is None:
        return None
    time.sleep(seconds)
    after, own = _cpu_times(stat, niced), _own_seconds() - own_before
    if after is None:
        return None
    idle = busy = 0.0
    for cpu in allowed & before.keys() & after.keys():
        (b0, t0), (b1, t1) = before[cpu], after[cpu]
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
            idle += 1 - (b1 - b0) / (t1 - t0)
    if not idle + busy:
        return None
    return min(float(len(allowed)), idle + min(busy, own / seconds))


def _allowed() -> set[int]:
    """The cores this process may run on."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def _cpu_times(stat: Path, niced_busy: bool) -> dict[int, tuple[int, int]] | None:
    """{cpu: (busy ticks, all ticks)} from /proc/stat's per-core lines (user nice system idle
    iowait irq softirq steal); nice ticks are busy only for a job that is niced itself."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *ticks = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and len(ticks) >= 4):
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = ([int(t) for t in ticks[:8]] + [0] * 8)[:8]
        busy = user + system + irq + softirq + steal + (nice if niced_busy else 0)
        out[int(name[3:])] = (busy, busy + idle + iowait + (0 if niced_busy else nice))
    return out or None


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def choose(default: int, assigned: int | None = None) -> tuple[int, str]:
    """(threads, why) for a job: $DFARUN_THREADS; else `assigned` (a launcher's cores per job);
    else the free cores, at least 1 and at most `default` (torch's own count: the physical
    cores, or what joblib's workers are given)."""
    if (threads := env_threads()) is not None:
        return threads, "DFARUN_THREADS"
    if assigned:
        return assigned, "the launcher's cores per job"
    free = free_cores()
    if free is None:
        return default, "torch's default"
    threads = max(1, min(default, math.floor(free + SLACK)))
    return threads, f"{free:.1f} of {len(_allowed())} cores free"
