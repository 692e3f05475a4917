"""The `dfarun` console script: a thin Hydra app around runner.run.

Before Hydra starts, every job's config is composed and checked (preflight.check_args): bad
input is one line on stderr and exit code 2 before any job trains. Whatever escapes later, in
any job, is one line as well, with its own exit code (guard.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dfarun.cli.guard import catch_sigterm, first_line, in_job, report
from dfarun.cli.preflight import CONFIG_NAME, check_args, expand_home, show_data_dir
from dfarun.config.schema import CONF_DIR
from dfarun.errors import DfarunError
from dfarun.run.threads import choose


def _jobs(threads_per_job: int = 4) -> int:
    """Parallel jobs for this machine: one per `threads_per_job` usable cores (at least one).
    conf/hydra/launcher/parallel.yaml: ${dfarun.jobs:4}."""
    import joblib  # counts the cores this process may use (affinity, cgroup quota)
    return max(1, joblib.cpu_count() // int(threads_per_job))


OmegaConf.register_new_resolver("dfarun.jobs", _jobs, replace=True)


def _set_threads() -> None:
    """Torch's CPU threads for this job (run.threads.choose): $DFARUN_THREADS, else the cores a
    submitit launcher gives each job (hydra.launcher.cpus_per_task), else the cores free when
    the job starts, at most torch's own count (in joblib's workers: cores // n_jobs)."""
    import torch  # not before the config is known to compose: errors stay fast

    assigned = OmegaConf.select(HydraConfig.get(), "launcher.cpus_per_task", default=None) \
        if HydraConfig.initialized() else None
    default = torch.get_num_threads()
    threads, why = choose(default, int(assigned) if assigned else None)
    torch.set_num_threads(threads)
    if threads < default:
        logging.getLogger("dfarun").info(f"{threads} CPU thread{'s' * (threads > 1)} of {default} ({why}; "
                                         "DFARUN_THREADS=n sets them)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def _main(cfg: DictConfig) -> float:
    from dfarun.run.runner import run

    def job() -> float:
        logging.raiseExceptions = False  # in a joblib worker too: see main
        _set_threads()
        return run(cfg)
    return in_job(f"{cfg.dataset.name} {cfg.model.name} {cfg.method.name} seeds {list(cfg.seeds)}", job)


def main() -> None:
    """The console script: check, then let Hydra run; anything that escapes is one line
    (guard.py), traceback only under DFARUN_DEBUG=1."""
    # torch's compiler warns that a CUDA build found no CUDA runtime; on a CPU machine that is expected
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # progress lines go to stdout: if its reader goes away (`dfarun ... | head -1`), training goes
    # on and writes its records, without a logging traceback per line (entry.py ends quietly)
    logging.raiseExceptions = False
    sys.argv[1:] = [expand_home(arg) for arg in sys.argv[1:]]
    try:
        with catch_sigterm():
            check_args(sys.argv[1:])
            sys.argv[1:] = show_data_dir(sys.argv[1:])
            from dfarun.cli.slurm import install  # hydra/launcher=slurm: a wait and errors fit for a real cluster
            install()
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises a job's error, to the guard below, not prints it
            with contextlib.redirect_stderr(_WithoutHydraJobError(sys.stderr)):
                _main()
    except OmegaConfBaseException as err:  # Hydra's own config, unresolvable at launch (hydra.run.dir=${nope})
        sys.exit(report(err))
    except ValueError as err:  # not a job's (in_job turns those into JobFailed): a launcher refusing
        sys.exit(report(DfarunError(f"a Hydra launcher setting was refused: {first_line(err)}")))  # n_jobs=0
    except (SystemExit, BrokenPipeError):  # --help and the like; a reader gone (`| head`): entry.py ends quietly
        raise
    except BaseException as err:  # noqa: BLE001 - every way out is reported, in one line
        sys.exit(report(err))


class _WithoutHydraJobError:
    """stderr without Hydra's line before a job's error ("Error executing job with overrides:
    [...]"): the guard's line says what failed."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return len(text) if text.startswith("Error executing job with overrides: ") else self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
