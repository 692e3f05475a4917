"""run/threads.py: a job takes the cores that are free when it starts; DFARUN_THREADS wins.
(How much that matters is `make bench`'s to show, never a test's.)"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dfarun.errors import DfarunError
from dfarun.run import threads


def stat(*cores: tuple[int, int, int, int]) -> str:
    """/proc/stat with per-core (user, nice, system, idle) ticks, the other columns 0."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]  # the all-cores line, which is not read
    lines += [f"cpu{i} {u} {n} {s} {idle} 0 0 0 0 0 0" for i, (u, n, s, idle) in enumerate(cores)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 7"]) + "\n"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A 2-core machine whose /proc/stat goes from `before` to `after` while the cores are watched."""
    path = tmp_path / "stat"
    monkeypatch.setattr(threads, "_allowed", lambda: {0, 1})
    monkeypatch.setattr(threads.os, "getpriority", lambda *a: 0)
    own = iter([5.0, 5.0])
    monkeypatch.setattr(threads, "_own_seconds", lambda: next(own))

    def watch(before: str, after: str, own_seconds: float = 0.0, niced: int = 0) -> float | None:
        nonlocal own
        own = iter([5.0, 5.0 + own_seconds])
        monkeypatch.setattr(threads.os, "getpriority", lambda *a: niced)
        path.write_text(before)
        monkeypatch.setattr(threads.time, "sleep", lambda s: path.write_text(after))
        return threads.free_cores(0.2, path)
    return watch


def test_a_busy_core_is_not_free(machine):
    before = stat((100, 0, 0, 100), (100, 0, 0, 100))
    assert machine(before, stat((120, 0, 0, 100), (100, 0, 0, 120))) == pytest.approx(1.0)  # core 0 busy
    assert machine(before, stat((110, 0, 0, 110), (100, 0, 0, 120))) == pytest.approx(1.5)  # half of it
    assert machine(before, stat((110, 0, 10, 100), (120, 0, 0, 100))) == pytest.approx(0.0)  # system time too


def test_this_processs_own_work_and_others_niced_work_count_as_free(machine):
    before = stat((100, 0, 0, 100), (100, 0, 0, 100))
    # core 0 was busy with this process (0.2 s of its CPU time in the 0.2 s watched)
    assert machine(before, stat((120, 0, 0, 100), (100, 0, 0, 120)), own_seconds=0.2) == pytest.approx(2.0)
    niced = stat((100, 20, 0, 100), (100, 0, 0, 120))  # core 0 busy with a niced process
    assert machine(before, niced) == pytest.approx(2.0)  # it yields to a job that is not niced
    assert machine(before, niced, niced=10) == pytest.approx(1.0)  # but not to a niced job


def test_no_proc_stat_means_no_answer(tmp_path):
    assert threads.free_cores(0.0, tmp_path / "absent") is None


def test_choice_order_dfarun_threads_then_the_launcher_then_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 1.8)
    monkeypatch.delenv("DFARUN_THREADS", raising=False)
    assert threads.choose(8)[0] == 2  # 1.8 free cores: 2 threads (a core at least 70% idle counts)
    assert threads.choose(1)[0] == 1  # never more than torch's own count
    monkeypatch.setattr(threads, "free_cores", lambda: 0.2)
    assert threads.choose(8)[0] == 1  # at least one
    assert threads.choose(8, assigned=3) == (3, "the launcher's cores per job")
    monkeypatch.setenv("DFARUN_THREADS", "5")
    assert threads.choose(8, assigned=3) == (5, "DFARUN_THREADS")
    monkeypatch.delenv("DFARUN_THREADS")
    monkeypatch.setattr(threads, "free_cores", lambda: None)
    assert threads.choose(6) == (6, "torch's default")


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5", "100000"])
def test_a_bad_dfarun_threads_is_one_line(monkeypatch, value):
    monkeypatch.setenv("DFARUN_THREADS", value)
    with pytest.raises(DfarunError, match=r"DFARUN_THREADS=.*expected an int from 1 to \d+"):
        threads.env_threads()


def test_on_this_machine_a_cpu_bound_process_takes_a_core():
    cores = len(threads._allowed())
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        free = threads.free_cores()
    finally:
        burner.kill()
        burner.wait()
    assert free is not None and 0 <= free <= cores - 0.7
