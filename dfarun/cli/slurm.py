"""hydra/launcher=slurm (and submitit_slurm): the waiting and the errors a real cluster needs,
put into hydra-submitit-launcher's Slurm launcher by `install()` (the CLI calls it).

The plugin submits a sweep as one job array, then waits for each job through `sacct`. That
hangs forever where `sacct` does not answer (a cluster without slurmdbd, as small lab
clusters often are) and a job ends without its result (cancelled, killed, out of memory); and
Slurm's refusals come out as a traceback. With `install()` the submission is still the
plugin's, but:
  - sbatch refusing the sweep (a bad partition, more memory than any node has) is one line on
    stderr and exit code 2;
  - a job that Slurm keeps pending for a reason that never goes away by itself (more cores than
    the partition's nodes have, a time limit over the partition's) is cancelled and named in
    one line (exit code 2), instead of waited for forever;
  - the wait asks `squeue`, which every cluster answers; a requeued job is simply waited for;
    jobs that end without their result (cancelled, failed) are named in one line, with their
    logs, once the others have ended (exit code 1).
A Hydra launcher of our own would have to live in the `hydra_plugins` package; patching the
one method keeps dfarun a single package.
"""
from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("hydra")

# squeue's states of a job that will not run again ("ENDED": squeue no longer lists it)
ENDED = {"ENDED", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
# pending reasons that only an administrator can lift, and what the user should change instead
NEVER = {
    "PartitionTimeLimit": "timeout_min is over the partition's time limit",
    "PartitionConfig": "it asks for more than the partition allows: time, nodes, cores, memory or GPUs",
    "PartitionNodeLimit": "the partition does not allow that many nodes",
    "BadConstraints": "no node has the cores, memory, GPUs or features it asks for",
    "InvalidAccount": "the account is not one of yours",
    "InvalidQOS": "the qos is not one of yours",
}
BAD_REQUEST, JOBS_LOST = 2, 1  # exit codes: the request (nothing trained), jobs that ended unfinished
POLL_S = 5           # how often squeue is asked (a job's result file is looked for every second)
RESULT_GRACE_S = 15  # a job that ended may take a moment to show its result on a shared file system (as submitit)


def install() -> None:
    """Make the submitit Slurm launcher use `launch` below (when the cluster extra is installed)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    except ImportError:
        return
    SlurmLauncher.launch = launch


def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """The plugin's BaseSubmititLauncher.launch (submitit 1.5, hydra-submitit-launcher 1.2), with
    sbatch's refusal as one line and `_wait` instead of submitit's sacct-based wait."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = self.params
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                                     slurm_max_num_timeout=params["max_num_timeout"])
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    args = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    # a job is named by what sets it apart from the sweep's other jobs
    shared = set.intersection(*map(set, job_overrides)) if len(job_overrides) > 1 else set()
    names = [" ".join(o for o in filter_overrides(overrides) if o not in shared) for overrides in job_overrides]
    request = "hydra.launcher: " + ", ".join(
        f"{k}={params[k]}" for k in ("partition", "account", "qos", "timeout_min", "cpus_per_task", "mem_gb",
                                     "gpus_per_node") if params.get(k) is not None)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr
            jobs = executor.map_array(self, *zip(*args))
    except submitit.core.utils.FailedJobError as err:
        _fail(f"Slurm refused the sweep: {_last_line(str(err))} ({request})")
    log.info(f"job array {jobs[0].job_id.split('_')[0]}: {len(jobs)} jobs, "
             f"at most {params['array_parallelism']} at once")
    _wait(jobs, names, request)
    return [job.results()[0] for job in jobs]


def _wait(jobs: list, names: list[str], request: str) -> None:
    """Return once every job has its result file. When some never will, exit with one line
    naming them, once the other jobs have ended."""
    array = jobs[0].job_id.split("_")[0]
    ended: dict[str, tuple[float, str]] = {}  # job id: (when squeue first said it ended, its state)
    asked = float("-inf")
    while True:
        now = time.monotonic()
        waiting = [j for j in jobs if not j.paths.result_pickle.exists()]
        lost = [j for j in waiting if now - ended.get(j.job_id, (now, ""))[0] > RESULT_GRACE_S]
        if len(lost) == len(waiting):
            break
        if now - asked >= POLL_S:
            asked = now
            states = _states(array)
            if states is not None:  # else squeue did not answer this time
                _cancel_if_stuck(array, states, request)
                for job in waiting:  # not listed: ended longer ago than Slurm remembers (MinJobAge)
                    state = states.get(job.job_id, ("ENDED", ""))[0]
                    if state not in ENDED:
                        ended.pop(job.job_id, None)  # requeued after it ended
                    elif job.job_id not in ended:
                        ended[job.job_id] = (now, state)
        time.sleep(1)
    if lost:
        told = "; ".join(f"job {j.job_id} ({names[jobs.index(j)]}) {ended[j.job_id][1]}, log {j.paths.stderr}"
                         for j in lost)
        _fail(f"{len(lost)} of {len(jobs)} jobs ended without finishing: {told}. Submit the same sweep "
              f"again to finish them: seeds with records are skipped, a checkpointed job resumes", JOBS_LOST)


def _cancel_if_stuck(array: str, states: dict[str, tuple[str, str]], request: str) -> None:
    """Cancel the array and exit when Slurm keeps a job pending for a reason in NEVER."""
    stuck = sorted({reason for state, reason in states.values() if state == "PENDING" and reason in NEVER})
    if stuck:
        subprocess.run(["scancel", array], capture_output=True)
        _fail(f"Slurm cannot start job array {array} ({stuck[0]}: {NEVER[stuck[0]]}); cancelled it ({request})")


def _states(array: str) -> dict[str, tuple[str, str]] | None:
    """{"<array>_<task>": (state, pending reason)} for the tasks Slurm still remembers; None
    when squeue does not answer."""
    out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", array,
                          "--format=%i|%T|%r"], capture_output=True, text=True)
    if out.returncode != 0:  # squeue says so when it forgot the whole array
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("sbatch: error: ") if lines else "sbatch failed"


def _fail(message: str, code: int = BAD_REQUEST) -> None:
    """One line and an exit code, as the CLI's errors (SystemExit passes through Hydra)."""
    print(f"dfarun: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
