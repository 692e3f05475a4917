"""Sweeps through a real Slurm scheduler (hydra/launcher=slurm), run as a cluster user runs
them: the records equal those of the same jobs run here, a requeued job resumes from its
checkpoint, a sweep with a cancelled job finishes when submitted again, and Slurm's refusals
are one line, not a hang.

`make test-slurm` starts a one-node cluster on this machine (scripts/slurm/cluster.sh) and runs
these; without one they are skipped (conftest.py). Every job is a CPU run on synthetic data on
one core (cpus_per_task=1); the local runs they are compared with get one torch thread too
(DFARUN_THREADS=1), so the numbers agree to the last bit.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from dfarun.run import store

from helpers import DFARUN, TINY, cli_env, comparable


pytestmark = pytest.mark.slurm

SMALL = "model=3x50_tanh"
LAUNCHER = {"hydra/launcher": "slurm", "hydra.launcher.gpus_per_node": "0", "hydra.launcher.cpus_per_task": "1",
            "hydra.launcher.mem_gb": "1", "hydra.launcher.timeout_min": "10",
            "hydra.launcher.array_parallelism": "2"}
# Long enough that a job cancelled or requeued after its first epoch cannot finish before it is
# killed: Slurm sends SIGTERM, which submitit's job ignores, and SIGKILL KillWait (2 s) later.
# 30 epochs of 1000 batches: ~0.2-0.4 s each on a CPU core.
EPOCHS = 30
LONG = ["dataset=synthetic", "dataset.train_size=16000", "dataset.test_size=500", "dataset.features=32",
        "batch_size=16", f"max_epochs={EPOCHS}", "compile=false", "device=cpu", SMALL]
TIMEOUT = 600  # seconds for one sweep: generous, the cluster shares the machine with the test


def slurm(**changes: str) -> list[str]:
    return [f"{k}={v}" for k, v in {**LAUNCHER, **changes}.items()]


def dfarun(cwd: Path, *args: str, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DFARUN, *args], cwd=cwd, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def background(cwd: Path, log: Path, *args: str):
    """`dfarun args` running in the background, its output in log; killed if still running at exit."""
    with open(log, "w") as f:
        proc = subprocess.Popen([*DFARUN, *args], cwd=cwd, env=cli_env(), stdout=f, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(what: str, found, proc: subprocess.Popen, log: Path, timeout: float = TIMEOUT):
    """Poll found() until it returns something true, while the sweep still runs."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert proc.poll() is None, f"the sweep ended before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return result


def job_logs(runs: Path) -> dict[str, Path]:
    """{slurm job id: the job's stdout log} for every sweep in the store."""
    return {p.parent.name: p for p in runs.glob("sweeps/*/.submitit/*/*_0_log.out")}


def records(runs: Path) -> dict[str, dict]:
    recs = {p.name: store.read(p) for p in sorted(runs.glob("*.json"))}
    assert all(r is not None for r in recs.values())
    return recs


def stamps(runs: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each record: a record written again gets a new inode (os.replace)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in runs.glob("*.json")}


def squeue() -> list[str]:
    return subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, check=True).stdout.split("\n")[:-1]


def resumed_after(log: str) -> list[int]:
    """The epochs a job's log says it resumed after (a sweep's lines start with the job's name)."""
    return [int(m) for m in re.findall(r"resuming seeds \[[\d, ]+\] after epoch (\d+)", log)]


def test_a_sweep_of_four_jobs_writes_the_records_of_the_same_sweep_run_here(tmp_path):
    grid = ["method=bp,dfa", "seeds=[0],[1]", SMALL, *TINY]
    out = dfarun(tmp_path, "-m", *slurm(), *grid, f"store={tmp_path / 'slurm'}")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    here = dfarun(tmp_path, "-m", *grid, f"store={tmp_path / 'here'}", DFARUN_THREADS="1")
    assert here.returncode == 0, here.stderr

    on_slurm, local = records(tmp_path / "slurm"), records(tmp_path / "here")
    assert len(on_slurm) == 4 and on_slurm.keys() == local.keys()
    for name, rec in on_slurm.items():
        assert comparable(rec) == comparable(local[name]), name
        assert rec["cpu_threads"] == 1                        # cpus_per_task reached torch
    # one job array of four tasks, at most two at once, each run by Slurm on this node
    [script] = (tmp_path / "slurm").glob("sweeps/*/.submitit/*/*_submission.sh")
    assert "#SBATCH --array=0-3%2" in script.read_text()
    logs = job_logs(tmp_path / "slurm")
    assert len(logs) == 4 and len({job.split("_")[0] for job in logs}) == 1
    assert max_at_once(logs.values()) <= 2
    assert squeue() == []


def max_at_once(logs) -> int:
    """The most jobs that ran at the same time, from the start and end times submitit logs."""
    stamp = r"submitit INFO \((\S+ \S+)\) - "
    spans = []
    for log in logs:
        text = log.read_text()
        begin = re.search(stamp + "Starting with JobEnvironment", text).group(1)
        end = re.search(stamp + "Exiting after successful completion", text).group(1)
        spans.append((begin, end))
    return max(sum(b <= t < e for b, e in spans) for t, _ in spans)


def test_a_job_requeued_mid_training_resumes_from_its_checkpoint_to_the_uninterrupted_records(tmp_path):
    runs, log = tmp_path / "slurm", tmp_path / "sweep.log"
    job = [*LONG, "method=dfa", "seeds=[0,1]"]
    with background(tmp_path, log, "-m", *slurm(), *job, f"store={runs}") as proc:
        wait_for("epoch checkpoint", lambda: list(runs.glob("checkpoints/*.pt")), proc, log)
        [job_id] = job_logs(runs)
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()

    out, err = job_logs(runs)[job_id].read_text(), job_logs(runs)[job_id].with_suffix(".err").read_text()
    assert f"JOB {job_id} ON" in err and "CANCELLED" in err and "DUE TO JOB REQUEUE" in err
    assert out.count("Starting with JobEnvironment") == 2     # Slurm ran it again
    [epoch] = resumed_after(out)
    assert 1 <= epoch < EPOCHS                                     # from the checkpoint, not from scratch
    assert "Traceback" not in log.read_text()

    here = dfarun(tmp_path, *job, f"store={tmp_path / 'here'}", DFARUN_THREADS="1")  # never interrupted
    assert here.returncode == 0, here.stderr
    on_slurm, local = records(runs), records(tmp_path / "here")
    assert len(on_slurm) == 2 and on_slurm.keys() == local.keys()
    for name, rec in on_slurm.items():
        assert rec["epochs"] == EPOCHS
        assert comparable(rec) == comparable(local[name]), name
    assert not list(runs.glob("checkpoints/*"))   # the folder may stay, empty


def test_a_sweep_with_a_cancelled_job_finishes_when_submitted_again_and_trains_no_seed_twice(tmp_path, make_cfg):
    runs, log = tmp_path / "slurm", tmp_path / "first.log"
    sweep = ["-m", *slurm(), *LONG, "method=bp,dfa", "seeds=[0],[1]", f"store={runs}"]
    first_job = store.checkpoint_path(make_cfg(*LONG, "method=bp", "seeds=[0]", f"store={runs}", tiny=False))
    with background(tmp_path, log, *sweep) as proc:
        wait_for("checkpoint of job 0", first_job.exists, proc, log)
        [array] = {job.split("_")[0] for job in job_logs(runs)}
        subprocess.run(["scancel", f"{array}_0"], check=True, capture_output=True)
        assert proc.wait(timeout=TIMEOUT) == 1, log.read_text()     # a job failed: exit code 1

    # the sweep names the job and what to do in one line, once the other three have finished
    first = log.read_text()
    assert "Traceback" not in first
    [line] = [line for line in first.splitlines() if line.startswith("dfarun:")]
    assert line.startswith(f"dfarun: error: 1 of 4 jobs ended without finishing: job {array}_0 (")
    assert "method=bp seeds=[0]" in line and "CANCELLED" in line and "Submit the same sweep again" in line
    assert "CANCELLED AT" in job_logs(runs)[f"{array}_0"].with_suffix(".err").read_text()
    before = stamps(runs)
    assert len(before) == 3 and first_job.exists()            # bp seed 0 died with its checkpoint

    again = dfarun(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stdout + again.stderr
    after = stamps(runs)
    assert len(after) == 4 and {k: after[k] for k in before} == before   # none of the three rewritten
    second = {job: p.read_text() for job, p in job_logs(runs).items() if not job.startswith(f"{array}_")}
    assert len(second) == 4
    resumed = [text for text in second.values() if resumed_after(text)]
    assert len(resumed) == 1 and 1 <= resumed_after(resumed[0])[0] < EPOCHS
    assert "bp: seeds [0] on cpu" in resumed[0]
    trained = re.compile(r"seed \d+: \w+ after \d+ epochs")    # a seed's last line, when trained
    skipped = [text for text in second.values() if "skipping seeds" in text and not trained.search(text)]
    assert len(skipped) == 3                                   # found their records, trained nothing
    assert records(runs)[store.record_path(make_cfg(*LONG, "method=bp", "seeds=[0]", tiny=False), 0).name]["epochs"] == EPOCHS
    assert not list(runs.glob("checkpoints/*"))   # the folder may stay, empty


# sbatch refuses some requests at once; others it accepts, and the job pends for good
# (PartitionConfig at first, then the reason in detail)
PENDING_FOR_GOOD = r"Slurm cannot start job array \d+ \((PartitionConfig|PartitionTimeLimit): .*; cancelled it"


@pytest.mark.parametrize("change, says", [
    ({"hydra.launcher.partition": "nowhere"}, "Slurm refused the sweep: .*Invalid partition name specified"),
    ({"hydra.launcher.mem_gb": "100000"}, "Slurm refused the sweep: .*Requested node configuration is not available"),
    ({"hydra.launcher.gpus_per_node": "1"}, "Slurm refused the sweep: Invalid generic resource"),  # the preset's default
    ({"hydra.launcher.cpus_per_task": "4096"}, PENDING_FOR_GOOD),
    ({"hydra.launcher.timeout_min": "600"}, PENDING_FOR_GOOD),  # the partition's MaxTime is 60
], ids=["partition", "memory", "gpu", "cpus", "time-limit"])
def test_a_request_the_cluster_cannot_meet_ends_in_one_line_not_a_hang(tmp_path, change, says):
    runs = tmp_path / "runs"
    # a hang would be a TimeoutExpired here; the answer comes within a few squeue polls of 5 s
    out = dfarun(tmp_path, "-m", *slurm(**change), "method=bp,dfa", SMALL, *TINY, f"store={runs}", timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith("dfarun: error: Slurm ") and re.search(says, line), line
    [(key, value)] = change.items()
    assert f"{key.removeprefix('hydra.launcher.')}={value}" in line
    assert "Traceback" not in out.stdout
    assert squeue() == []                                      # nothing left waiting in the queue
    assert not list(runs.glob("*.json")) and not list(runs.glob("checkpoints/*"))
