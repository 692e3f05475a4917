"""Sweeps through Hydra's parallel launchers: joblib (hydra/launcher=parallel) and submitit's
local executor (the Slurm launcher's stand-in without a cluster).

Each sweep is one `dfarun -m` call of two tiny jobs, the console script's code run in-process
(helpers.run_dfarun: the launcher is what is under test, and the parent's start-up is a few
seconds); each job still runs in a process of its own, as the launcher starts it.
"""
from __future__ import annotations

import os
from pathlib import Path

import joblib
from omegaconf import OmegaConf

from dfarun.run import store
from dfarun.config.schema import CONF_DIR

from helpers import TINY, run_dfarun


def sweep_records(runs: Path) -> list[dict]:
    recs = [store.read(p) for p in sorted(runs.glob("*.json"))]
    assert all(r is not None for r in recs)
    return recs


def test_joblib_sweep_runs_two_jobs_in_parallel_with_cores_split_between_them(tmp_path, monkeypatch):
    monkeypatch.delenv("DFARUN_THREADS", raising=False)  # it would win over the launcher's share
    runs = tmp_path / "runs"
    out = run_dfarun(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "method=bp,dfa",
                     "model=3x50_tanh", "seeds=[0,1]", *TINY, f"store={runs}")
    assert out.code == 0, out.err
    assert "Traceback" not in out.out + out.err
    assert "Joblib.Parallel(n_jobs=2" in out.out + out.err
    recs = sweep_records(runs)
    assert sorted((r["config"]["method"]["name"], r["seed"]) for r in recs) == [
        ("bp", 0), ("bp", 1), ("dfa", 0), ("dfa", 1)]
    assert all(r["epochs"] == 2 and r["stacked_seeds"] == 2 for r in recs)
    # joblib gives each of the 2 workers half the cores: no oversubscription
    assert {r["cpu_threads"] for r in recs} == {max(1, joblib.cpu_count() // 2)}
    own = ("live", "locks", "checkpoints")  # the store's own folders, which stay
    assert sorted(n for n in os.listdir(runs) if n not in own and not n.endswith(".diff")) == sorted([p.name for p in runs.glob("*.json")] + ["sweeps"])
    assert len(list(runs.glob("sweeps/*/multirun.yaml"))) == 1


def test_submitit_local_sweep_writes_its_records_and_logs_under_the_store(tmp_path):
    runs = tmp_path / "runs"
    out = run_dfarun(tmp_path, "-m", "hydra/launcher=submitit_local", "method=bp,dfa", "model=3x50_tanh",
                     *TINY, f"store={runs}", env={"DFARUN_THREADS": "1"})
    assert out.code == 0, out.err
    recs = sweep_records(runs)
    assert sorted(r["config"]["method"]["name"] for r in recs) == ["bp", "dfa"]
    assert {r["cpu_threads"] for r in recs} == {1}                # DFARUN_THREADS reached the jobs
    [sweep] = runs.glob("sweeps/*")
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2
    assert all("seed 0: max_epochs after 2 epochs" in log.read_text() for log in logs)
    assert os.listdir(tmp_path) == ["runs"]                       # nothing outside the store


def test_presets_extend_the_plugins_and_name_what_a_cluster_user_edits():
    slurm = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / "slurm.yaml")
    assert slurm.defaults == ["submitit_slurm"]
    for key in ("partition", "timeout_min", "gpus_per_node", "cpus_per_task", "array_parallelism"):
        assert key in slurm
    parallel = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / "parallel.yaml")
    assert parallel.defaults == ["joblib"]
    from dfarun.cli.main import _jobs  # the ${dfarun.jobs:4} resolver
    assert _jobs(4) == max(1, joblib.cpu_count() // 4) and _jobs(10**6) == 1
