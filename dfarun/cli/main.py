"""The `dfarun` console script: a thin Hydra wrapper around runner.run.

Before Hydra starts, `check_args` composes the config as Hydra will (each job of a `-m`
sweep) and validates it, so that any bad input -- an override that does not parse, an unknown
key or group option, a wrong type, a bad value, a missing device or folder -- is one line
on stderr and exit code 2, before anything is written (Hydra's own compose errors would be
several lines and exit code 1). It imports no torch until the config is known to compose.
Grids and rows are checked against the command line too (grids.py). Whatever escapes later, in
any job, is one line as well, with its own exit code (guard.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dfarun.config import grids
from dfarun.config.schema import CONF_DIR, expected, unknown_key
from dfarun.errors import ConfigError, DfarunError, check_folder
from dfarun.config.checks import validate
from dfarun.cli.guard import catch_sigterm, in_job, report

CONFIG_NAME = "config"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


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
        # more threads than some small multiple of the cores is a typo; OpenMP crashes on huge counts
        most = 4 * (os.cpu_count() or 1)
        if not threads.isdigit() or not 1 <= int(threads) <= most:
            raise DfarunError(f"DFARUN_THREADS={threads!r}: expected an int from 1 to {most} (4 x this machine's cores)")
    elif HydraConfig.initialized():
        threads = str(OmegaConf.select(HydraConfig.get(), "launcher.cpus_per_task", default=None) or "")
    if threads:
        import torch  # not before the config is known to compose: errors stay fast
        torch.set_num_threads(int(threads))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def _main(cfg: DictConfig) -> None:
    from dfarun.run.runner import run

    def job() -> None:
        logging.raiseExceptions = False  # in a joblib worker too: see main
        _set_threads()
        run(cfg)
    in_job(f"{cfg.dataset.name} {cfg.model.name} {cfg.method.name} seeds {list(cfg.seeds)}", job)


def main() -> None:
    """The console script: check, then let Hydra run; anything that escapes is one line
    (guard.py), traceback only under DFARUN_DEBUG=1."""
    # torch's compiler warns that a CUDA build found no CUDA runtime; on a CPU machine that is expected
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # progress lines go to stdout: if its reader goes away (`dfarun ... | head -1`), training goes
    # on and writes its records, without a logging traceback per line (entry.py ends quietly)
    logging.raiseExceptions = False
    sys.argv[1:] = [_expand_home(arg) for arg in sys.argv[1:]]
    try:
        with catch_sigterm():
            check_args(sys.argv[1:])
            from dfarun.cli.slurm import install  # hydra/launcher=slurm: a wait and errors fit for a real cluster
            install()
            with _hydra_raises():
                _main()
    except SystemExit:  # --help and the like
        raise
    except BaseException as err:  # noqa: BLE001 - every way out is reported, in one line
        sys.exit(report(err))


def _expand_home(arg: str) -> str:
    """`data_dir=~/data` as zsh, or a quoted bash word, passes it: expanded here as bash would
    have done (Hydra's grammar has no bare ~, and Hydra's own folders would take it literally),
    and quoted for Hydra."""
    key, eq, value = arg.partition("=")
    if key in ("--config-dir", "-cd") and eq:  # a flag, not an override: Hydra takes the path as it is
        return f"{key}={os.path.expanduser(value)}"
    if not (eq and not key.startswith("-") and HOME_PATH.fullmatch(value)):
        return arg
    path = os.path.expanduser(value)
    return arg if "'" in path else f"{key}='{path}'"  # a home with a quote in its name: left to Hydra


HOME_PATH = re.compile(r"~[\w./+-]*")  # ~, ~/data, ~user/data: no quotes, commas or brackets to mind


@contextlib.contextmanager
def _hydra_raises():
    """Hydra prints a job's exception with its traceback and exits 1 unless HYDRA_FULL_ERROR=1,
    with which it raises it: to main's guard. Its own line before that ("Error executing job
    with overrides: [...]") is left out: the guard's line says what failed."""
    before, stderr = os.environ.get("HYDRA_FULL_ERROR"), sys.stderr
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.stderr = _WithoutHydraJobError(stderr)
    try:
        yield
    finally:
        sys.stderr = stderr
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


class _WithoutHydraJobError:
    """A stream that passes on everything but Hydra's "Error executing job" line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides: "):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def check_args(argv: list[str]) -> list[DictConfig]:
    """Compose and validate the config(s) that `dfarun argv` would run; return them.
    --help, --info and the like, and another --config-path (primary config folder), are left to
    Hydra; --config-dir (a folder of more config groups' options) is composed with."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from hydra.types import RunMode

    argparser = get_args_parser()
    argparser.error = _usage_error  # argparse prints its usage, several lines: one line instead
    args = argparser.parse_args(argv)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.config_path
            or args.experimental_rerun):
        return []
    search, extra = [], None  # --config-dir: its options (model/<name>.yaml, ...) join ours, as in Hydra
    if args.config_dir is not None:
        extra = Path(args.config_dir)
        if not (args.config_dir and extra.is_dir()):  # Hydra would take '' for the current folder
            raise DfarunError(f"--config-dir={args.config_dir!r}: no such folder; expected a folder of config "
                              "groups' options, e.g. model/<name>.yaml")
        _check_not_shadowed(extra)
        search = [f"hydra.searchpath=['file://{extra.resolve()}']"]
    # composed here only as Hydra will compose it: another search path, a primary config of the
    # --config-dir's own, or a folder name the override grammar cannot quote are left to Hydra
    if any(o.split("=")[0].lstrip("+~") == "hydra.searchpath" for o in args.overrides) or (
            extra and (args.config_name or any(c in str(extra.resolve()) for c in "'\\"))):
        return []
    name, overrides = args.config_name or CONFIG_NAME, list(args.overrides)
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as err:
            lines = str(err).splitlines()
            reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error parsing") else lines[0]
            quote = "; quote a path that starts with ~, as data_dir='~/a'" if "~" in text else ""
            raise DfarunError(f"{text}: not an override ({reason}); expected key=value, e.g. "
                              f"max_epochs=20 (grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)"
                              f"{quote}") from None
    multirun = args.multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN"
                                    for o in parsed)
    if args.multirun + bool(args.cfg) + args.run > 1:
        raise DfarunError("-m, -c/--cfg and -r/--run: expected one of them at most")
    if args.package and not args.cfg:  # Hydra ignores it, and would start a run
        raise DfarunError(f"-p/--package={args.package}: shows part of a config, with --cfg job (or hydra, all)")
    for o in parsed:
        if o.is_sweep_override() and not multirun:
            raise ConfigError(o.key_or_group, o.get_value_string(), "a sweep needs -m (--multirun); "
                              f"a list is written {o.key_or_group}=[a,b]")
    if not args.cfg:  # --cfg shows a config, contradictions and all
        grids.check_command_line(parsed, multirun)
    cfgs, sweep_dir = [], None
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="dfarun"):
        try:  # a sweep's primary config (its grid, its sweep dir), composed once
            primary = GlobalHydra.instance().hydra.compose_config(
                name, search + overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False) if multirun else None
            jobs = _sweep_jobs(primary, overrides) if multirun else [overrides]
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            raise _one_line(err, overrides) from None
        for job in jobs:
            if not args.cfg:
                grids.check_job(parser.parse_overrides(job))
            try:
                cfg, run_dir = _compose(compose, GlobalHydra.instance().config_loader(), name, job, search)
            except (HydraException, OmegaConfBaseException, ValueError) as err:
                raise _one_line(err, job) from None
            cfgs.append(cfg)
        if multirun and not args.cfg:
            sweep_dir = _sweep_dir(primary)
    if not args.cfg:  # --cfg shows a config, bad values and all
        from dfarun.run import store  # imports torch

        for cfg in cfgs:  # after composing them all: a compose error is found without importing torch
            validate(cfg)
            store.check_store(cfg)
        if isinstance(sweep_dir, DfarunError):  # after validate, which names a root cause (~store) first
            raise sweep_dir
        if sweep_dir is not None:  # where Hydra writes multirun.yaml (under <store>/sweeps/)
            check_folder("hydra.sweep.dir", sweep_dir, "for the sweep's multirun.yaml")
            _check_joblib(primary.hydra.launcher)
        elif not multirun:  # a single run's working folder: "." unless hydra.run.dir says otherwise
            if isinstance(run_dir, DfarunError):
                raise run_dir
            # Hydra writes nothing into it (output_subdir: null): it must only be there, or be makeable
            check_folder("hydra.run.dir", run_dir, "for the run's working folder",
                         write=not Path(run_dir).expanduser().is_dir())
    return cfgs


def _check_not_shadowed(extra: Path) -> None:
    """Hydra looks in dfarun's conf/ first: a --config-dir file at the same place as one of ours
    (model/2x800_tanh.yaml, config.yaml) would never be read. Refused, unless it is a copy."""
    for mine in sorted(extra.rglob("*.yaml")):
        ours = CONF_DIR / mine.relative_to(extra)
        if ours.is_file() and ours.read_bytes() != mine.read_bytes():
            raise DfarunError(f"--config-dir: {mine} stands where dfarun's own {ours.relative_to(CONF_DIR)} does, "
                              "which Hydra would read instead; give yours another name")


def _check_joblib(launcher: DictConfig) -> None:
    """hydra/launcher=parallel: the settings joblib would refuse only after Hydra has made the
    sweep's folder (and with a traceback)."""
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return
    n, prefer = launcher.get("n_jobs"), launcher.get("prefer")
    if not (n is None or (isinstance(n, int) and not isinstance(n, bool) and n != 0)):
        raise ConfigError("hydra.launcher.n_jobs", n, "expected an int other than 0 (-1: one job per core)")
    if prefer not in (None, "processes", "threads"):
        raise ConfigError("hydra.launcher.prefer", prefer, "expected processes, threads or null")


def _usage_error(message: str):
    raise DfarunError(f"{message}; expected dfarun [-m] [key=value ...], flags first (dfarun --help)")


def _sweep_dir(primary: DictConfig) -> str | DfarunError:
    """The folder Hydra will make for a -m sweep, resolved now (its ${now:} differs by seconds:
    only the folders above it matter); the error, when it does not resolve."""
    try:
        return str(primary.hydra.sweep.dir)
    except (OmegaConfBaseException, ValueError) as err:
        return DfarunError(f"hydra.sweep.dir: cannot be resolved ({_first_line(err)})")


def _sweep_jobs(primary: DictConfig, overrides: list[str]) -> list[list[str]]:
    """The jobs a -m sweep launches, each as its list of overrides (as Hydra's basic sweeper
    expands the command line and hydra.sweeper.params); [] for another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if primary.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return []
    params = [f"{k}={v}" for k, v in (primary.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


_OPTIONS: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def _compose(compose, loader, name: str, overrides: list[str], search: list[str]
             ) -> tuple[DictConfig, str | DfarunError]:
    """One job's config, without Hydra's node, and its hydra.run.dir (the error, when that does
    not resolve); an optional group (row, experiment) whose option does not exist is an error
    here, where Hydra would skip it. `search`: the hydra.searchpath override of a --config-dir."""
    from hydra.core.object_type import ObjectType

    cfg = compose(name, overrides=search + overrides, return_hydra_config=True)
    for group, choice in cfg.hydra.runtime.choices.items():
        if choice is not None and not group.startswith("hydra/"):
            if (key := (group, tuple(search))) not in _OPTIONS:  # slow to list: once per group
                _OPTIONS[key] = loader.get_group_options(group, ObjectType.CONFIG, name, search)
            if choice not in _OPTIONS[key]:
                raise ConfigError(group, choice, f"no such option; expected one of {', '.join(_OPTIONS[key])}")
    try:
        run_dir: str | DfarunError = str(cfg.hydra.run.dir)
    except (OmegaConfBaseException, ValueError) as err:
        run_dir = DfarunError(f"hydra.run.dir: cannot be resolved ({_first_line(err)})")
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def _one_line(err: Exception, overrides: list[str]) -> DfarunError:
    """Hydra's and OmegaConf's compose errors, as one line naming the key, value and what
    the schema allows."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import MissingConfigException

    values = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return ConfigError(group, option, f"no such option; expected one of {', '.join(err.options)}")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        return unknown_key(key, values.get(key, values.get(key.rpartition(".")[0])))
    if isinstance(cause, ValidationError) and key:
        top = key.split("[")[0]
        if top in values:
            return ConfigError(top, values[top], f"expected {expected(top)}")
        return DfarunError(f"{top}: {_first_line(cause)}; expected {expected(top)}")
    text = _first_line(err)
    if cause is not err:
        text += f" ({_first_line(cause)})"
    return DfarunError(f"cannot compose the config: {text}")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

