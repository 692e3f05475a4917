"""Many jobs on one store: threads and processes with overlapping seed lists, random SIGKILLs,
then a rerun of them all (in-process). Nothing is lost, nothing is trained twice, no half-written
record is ever seen, and the table equals an uninterrupted run's.

The processes run the real CLI with one torch thread each (DFARUN_THREADS=1): on one thread a
seed's numbers do not depend on which other seeds share its stack, so however the jobs split
the seeds between them, the records must equal the uninterrupted run's exactly. The kill times
come from a seeded generator; what they hit depends on the machine's speed, and the assertions
hold for any outcome.
"""
from __future__ import annotations

import collections
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import torch

import dfarun.run.runner as runner
from dfarun.run import store
from dfarun.report import tables
from dfarun.run.runner import run_records

from helpers import DFARUN, cli_env, run_dfarun


SMALL = "model=3x50_tanh"


def essentials(rec: dict) -> dict:
    """What must not depend on which job trained a seed, or when."""
    keep = {k: rec[k] for k in ("seed", "key", "row", "stop", "epochs", "train_error", "test_error")}
    keep["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in rec["history"]]
    keep["method"] = rec["config"]["method"]["name"]
    return keep


def store_files(root: Path) -> list[str]:
    """The store's files, less Hydra's sweep folders, the live histories (progress.py's, which
    grow as training goes; the records are what must be whole) and the code diffs beside the
    records of a checkout with uncommitted changes (test_run_provenance.py)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not {"sweeps", "live"} & set(p.relative_to(root).parts) and p.suffix != ".diff")


# --- threads -----------------------------------------------------------------------------------

def test_threads_with_overlapping_seed_lists_train_each_seed_exactly_once(make_cfg, tmp_path, monkeypatch):
    trained = []
    real = runner._train

    def spy(cfg, seeds, *rest):
        trained.extend((cfg.method.name, s) for s in seeds)
        return real(cfg, seeds, *rest)

    monkeypatch.setattr(runner, "_train", spy)
    jobs = [("dfa", [0, 1, 2, 3]), ("dfa", [2, 3, 4, 5]), ("dfa", [0, 1, 2, 3]), ("dfa", [5, 3, 1]),
            ("bp", [0, 1, 2]), ("bp", [2, 1, 0]), ("bp", [1, 2, 3])]
    cfgs = [make_cfg(SMALL, f"method={m}", f"seeds={seeds}", "max_epochs=3") for m, seeds in jobs]
    start = threading.Barrier(len(cfgs))
    results, errors = {}, []

    def job(i):
        try:
            start.wait()
            results[i] = run_records(cfgs[i])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(cfgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == len(jobs)

    wanted = {(m, s) for m, seeds in jobs for s in seeds}
    assert collections.Counter(trained) == {pair: 1 for pair in wanted}   # once each, never twice
    for i, (method, seeds) in enumerate(jobs):   # every job returns every seed it asked for
        assert [r["seed"] for r in results[i]] == seeds
        assert results[i] == [store.read(store.record_path(cfgs[i], s)) for s in seeds]
    runs = tmp_path / "runs"
    assert store_files(runs) == sorted(p.name for p in runs.glob("*.json"))  # no locks, checkpoints, temps
    assert len(tables.load_records(runs)) == len(wanted)


# --- processes, SIGKILL, rerun -------------------------------------------------------------------

# a job of one experiment trains ~0.5 s on a core (idle 2-core machine), a sweep's of two ~1 s:
# the kills (0-1.5 s after a job's first line) find the victims training, writing or done
ARGS = ["dataset=synthetic", "dataset.train_size=2000", "dataset.test_size=500", "dataset.features=32",
        "compile=false", "device=cpu", SMALL, "max_epochs=15"]
# started together; every seed list has 4 seeds, so the table's "seeds asked" is the same
# whichever job trains a seed
ATTACK = [
    ["method=dfa", "seeds=[0,1,2,3]"],
    ["method=dfa", "seeds=[0,1,2,3]"],            # identical job: waits for the first
    ["-m", "method=dfa,bp", "seeds=[2,3,4,5]"],
    ["-m", "method=dfa,bp", "seeds=[4,5,0,1]"],   # shares dfa 0, 1 with the two above
]
VICTIMS = (0, 2)   # the other two live: were the seeds they share trained twice, both would finish
# then one sweep that holds every job above (and bp [0,1,2,3])
RERUN = ["-m", "method=bp,dfa", "seeds=[0,1,2,3],[2,3,4,5],[4,5,0,1]"]


class Job:
    """A dfarun process in its own session, its output read line by line as it comes."""

    def __init__(self, args: list[str], cwd: Path, runs: Path):
        flags = [a for a in args if a.startswith("-")]   # Hydra's flags before the overrides
        overrides = [a for a in args if not a.startswith("-")]
        self.proc = subprocess.Popen([*DFARUN, *flags, *ARGS, *overrides, f"store={runs}"], cwd=cwd,
                                     env=cli_env(DFARUN_THREADS="1"), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.started = threading.Event()   # its first line: imports done, the job has begun
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.started.set()
        self.started.set()

    def kill_after(self, seconds: float):
        def kill():
            self.started.wait(timeout=120)
            time.sleep(seconds)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        threading.Thread(target=kill, daemon=True).start()

    def wait(self) -> int:
        try:
            rc = self.proc.wait(timeout=240)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.reader.join(timeout=10)
        return rc


def finished(lines: list[str]) -> list[tuple[str, int]]:
    """(method, seed) of every seed a job's lines say it finished."""
    out, method = [], None
    for line in lines:  # after the clock and a sweep's job tag, where there are
        if m := re.search(r"synthetic \S+ Tanh (\w+): seeds", line):
            method = m[1]
        elif m := re.search(r"\bseed (\d+): \w+ after \d+ epochs", line):
            out.append((method, int(m[1])))
    return out


def test_concurrent_jobs_killed_at_random_then_rerun_give_the_uninterrupted_table(make_cfg, tmp_path, capsys):
    # the reference: every experiment uninterrupted, in-process, one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in ("bp", "dfa"):
            for seeds in ("[0,1,2,3]", "[2,3,4,5]"):
                run_records(make_cfg(*ARGS, f"method={method}", f"seeds={seeds}", f"store={tmp_path / 'reference'}",
                             tiny=False))
    finally:
        torch.set_num_threads(threads)
    reference = tables.load_records(tmp_path / "reference")
    assert len(reference) == 12

    runs = tmp_path / "runs"
    rng = random.Random(2016)
    attack = [Job(args, tmp_path, runs) for args in ATTACK]
    for i in VICTIMS:
        attack[i].kill_after(rng.uniform(0.0, 1.5))
    codes = [job.wait() for job in attack]
    for i in set(range(len(ATTACK))) - set(VICTIMS):
        assert codes[i] == 0, "\n".join(attack[i].lines)
    assert all(c in (0, -signal.SIGKILL) for c in codes), codes
    assert -signal.SIGKILL in codes, "no kill landed: the jobs are too short for the kill times"

    # whatever the kills hit: records are whole, checkpoints readable, nothing else but locks and temps
    for name in store_files(runs):
        path = runs / name
        if name.endswith(".json"):
            assert store.read(path) is not None, name
        elif name.startswith("checkpoints/") and name.endswith(".pt"):
            assert store.load_checkpoint(path) is not None, name
        else:
            assert name.startswith("locks/") or Path(name).name.startswith("."), name
    capsys.readouterr()
    partial = tables.load_records(runs)
    assert "warning" not in capsys.readouterr().err      # tables never see a half-written record

    # the rerun: the console script's code in-process (nothing kills it; a process start-up saved)
    rerun = run_dfarun(tmp_path, *RERUN[:1], *ARGS, *RERUN[1:], f"store={runs}", env={"DFARUN_THREADS": "1"})
    assert rerun.code == 0, rerun.out + rerun.err
    assert "Traceback" not in rerun.out + rerun.err
    assert "skipping seeds" in rerun.out  # its lines are read below: the survivors' seeds are found, not retrained

    # no seed finished twice, nothing lost, nothing left over
    done = collections.Counter(pair for lines in [*(job.lines for job in attack), rerun.out.splitlines()]
                               for pair in finished(lines))
    assert max(done.values()) == 1, done
    assert store_files(runs) == sorted(p.name for p in runs.glob("*.json"))
    assert len(store_files(runs)) == 12
    records = tables.load_records(runs)
    assert "warning" not in capsys.readouterr().err
    assert not records.duplicated(["key", "seed"]).any()
    assert set(partial.itertuples(index=False)) <= set(records.itertuples(index=False))

    # the same numbers as the uninterrupted run, record by record and cell by cell
    def by_seed(root):
        return sorted((essentials(store.read(p)) for p in root.glob("*.json")), key=lambda r: (r["method"], r["seed"]))
    assert by_seed(runs) == by_seed(tmp_path / "reference")
    pd.testing.assert_frame_equal(tables.aggregate(records.sort_values(["method", "seed"], ignore_index=True)),
                                  tables.aggregate(reference.sort_values(["method", "seed"], ignore_index=True)))
