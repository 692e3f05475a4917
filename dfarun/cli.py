"""The `dfarun` console script: a thin Hydra wrapper around runner.run."""
from __future__ import annotations

import logging
import os
import sys

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR, DfarunError
from .runner import run


def _jobs(threads_per_job: int = 4) -> int:
    """Parallel jobs for this machine: one per `threads_per_job` usable cores (at least one).
    conf/hydra/launcher/parallel.yaml: ${dfarun.jobs:4}."""
    import joblib  # counts the cores this process may use (affinity, cgroup quota)
    return max(1, joblib.cpu_count() // int(threads_per_job))


OmegaConf.register_new_resolver("dfarun.jobs", _jobs, replace=True)


def _set_threads() -> None:
    """Torch's CPU threads for this job: $DFARUN_THREADS, else the cores a submitit launcher
    gives each job (hydra.launcher.cpus_per_task). Otherwise torch's default stands: every core
    for a plain run, cores // n_jobs in joblib's workers (joblib sets OMP_NUM_THREADS there)."""
    threads = os.environ.get("DFARUN_THREADS", "")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise DfarunError(f"DFARUN_THREADS={threads!r}: expected an int >= 1")
    elif HydraConfig.initialized():
        threads = str(OmegaConf.select(HydraConfig.get(), "launcher.cpus_per_task", default=None) or "")
    if threads:
        torch.set_num_threads(int(threads))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        _set_threads()
        run(cfg)
    except DfarunError as err:
        print(f"dfarun: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    # torch's compiler warns that a CUDA build found no CUDA runtime; on a CPU machine that is expected
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    _main()
