"""The pre-flight of `dfarun`: before Hydra starts, `check_args` composes the config of every
job Hydra will run (each job of a `-m` sweep, `hydra.sweeper.params` included) through Hydra's
public compose API and validates them all, so that bad input -- an override that does not
parse, an unknown key or group option, a wrong type, a bad value, a missing device or folder --
is one line on stderr and exit code 2 before any job trains or anything is written. Hydra's and
OmegaConf's own errors are put in one line by one rule (`_one_line`). No torch is imported until
every job has composed.

Also the command line as Hydra reads it (its flags), with `~` in a path expanded as a shell
would, and --cfg/--help showing data_dir's folder rather than its resolver.
"""
from __future__ import annotations

import argparse
import copy
import functools
import itertools
import os
import re
from pathlib import Path

from omegaconf import DictConfig, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dfarun.cli.guard import compose_error, first_line
from dfarun.config import grids
from dfarun.config.checks import expected, unknown_key, validate
from dfarun.config.schema import CONF_DIR, default_data_dir
from dfarun.errors import ConfigError, DfarunError

CONFIG_NAME = "config"


def check_args(argv: list[str]) -> list[DictConfig]:
    """Compose and validate the config of every job that `dfarun argv` would run; return them.
    --help, --info and the like, and another primary config (--config-path, --config-name with
    --config-dir, a hydra.searchpath of one's own) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = _parse(argv)
    if any(vars(args)[flag] for flag in ("help", "hydra_help", "version", "info", "shell_completion", "config_path",
                                         "experimental_rerun")):
        return []
    if args.multirun + bool(args.cfg) + args.run > 1:
        raise DfarunError("-m, -c/--cfg and -r/--run: expected one of them at most")
    if args.package and not args.cfg:  # Hydra ignores it, and would start a run
        raise DfarunError(f"-p/--package={args.package}: shows part of a config, with --cfg job (or hydra, all)")
    search = _search_path(args.config_dir, args.config_name)
    name = args.config_name or CONFIG_NAME
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="dfarun"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        overrides = [_override(parser, text) for text in args.overrides]
        if search is None or any(o.key_or_group == "hydra.searchpath" for o in overrides):
            return []
        multirun = args.multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in overrides)
        for o in overrides:
            if o.is_sweep_override() and not multirun:
                raise ConfigError(o.key_or_group, o.get_value_string(), "a sweep needs -m (--multirun); "
                                  f"a list is written {o.key_or_group}=[a,b]")
        if not args.cfg:  # --cfg shows a config, contradictions and all
            grids.check_command_line(overrides, multirun)

        @functools.lru_cache(maxsize=None)  # the primary config is a sweep's only job where nothing is swept
        def composed(job: tuple[str, ...]) -> DictConfig:
            parsed = parser.parse_overrides(list(job))
            for o in parsed:
                _check_option(o, name, search)
            try:
                return compose(name, overrides=search + list(job), return_hydra_config=True)
            except (HydraException, OmegaConfBaseException, ValueError) as err:
                raise _one_line(err, parsed) from None

        # a run's job; a sweep's primary config (its grid: hydra.sweeper.params, its folder), with
        # the values written as the sweeper writes its jobs': a sweep of one job composes once
        fixed = [_line(o) if multirun else o.input_line for o in overrides if not o.is_sweep_override()]
        primary = composed(tuple(fixed))
        jobs = _sweep(primary, overrides, parser) if multirun else [fixed]
        cfgs = []
        for job in jobs:
            if not args.cfg:
                grids.check_job(parser.parse_overrides(job))
            cfgs.append(_without_hydra(composed(tuple(job))))
    if not args.cfg:  # --cfg shows a config, bad values and all
        for cfg in cfgs:  # after composing them all: a compose error is found without importing torch
            validate(cfg)
    return cfgs


def _override(parser, text: str):
    """One command-line override, parsed; one that does not parse is one line."""
    from hydra.errors import OverrideParseException
    try:
        return parser.parse_overrides([text])[0]
    except OverrideParseException as err:  # "Error parsing override '...'", then the reason
        reason = str(err).splitlines()[1 if str(err).startswith("Error parsing") else 0]
        quote = "; quote a path that starts with ~, as data_dir='~/a'" if "~" in text else ""
        raise DfarunError(f"{text}: not an override ({reason}); expected key=value, e.g. max_epochs=20 "
                          f"(grammar: https://hydra.cc/docs/advanced/override_grammar/basic/){quote}") from None


def _search_path(config_dir: str | None, config_name: str | None) -> list[str] | None:
    """--config-dir (a folder of more config groups' options) as the hydra.searchpath override
    that adds it; None where Hydra is left to compose alone (a primary config of the folder's
    own, a folder name the override grammar cannot quote)."""
    if config_dir is None:
        return []
    extra = Path(config_dir)
    if not (config_dir and extra.is_dir()):  # Hydra would take '' for the current folder
        raise DfarunError(f"--config-dir={config_dir!r}: no such folder; expected a folder of config "
                          "groups' options, e.g. model/<name>.yaml")
    for mine in sorted(extra.rglob("*.yaml")):  # Hydra looks in dfarun's conf/ first: such a file is never read
        ours = CONF_DIR / mine.relative_to(extra)
        if ours.is_file() and ours.read_bytes() != mine.read_bytes():
            raise DfarunError(f"--config-dir: {mine} stands where dfarun's own {ours.relative_to(CONF_DIR)} does, "
                              "which Hydra would read instead; give yours another name")
    if config_name or any(c in str(extra.resolve()) for c in "'\\"):
        return None
    return [f"hydra.searchpath=['file://{extra.resolve()}']"]


@functools.lru_cache(maxsize=None)
def _listed(name: str, search: tuple[str, ...], path: str, groups: bool) -> tuple[str, ...]:
    """The groups, or the options, in a folder of Hydra's search path (slow to list: once)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    kind = ObjectType.GROUP if groups else ObjectType.CONFIG
    return tuple(GlobalHydra.instance().config_loader().get_group_options(path, kind, name, list(search)))


def _check_option(o, name: str, search: list[str]) -> None:
    """A group option that an override picks exists. Hydra would skip one of an optional group
    (row=, experiment=) without a word, and name the others' in several lines."""
    parent, _, leaf = o.key_or_group.rpartition("/")
    if o.is_delete() or "." in o.key_or_group or leaf not in _listed(name, tuple(search), parent, True):
        return  # a key, not a group
    options = _listed(name, tuple(search), o.key_or_group, False)
    if o.value() not in options:
        raise ConfigError(o.key_or_group, o.value(), f"no such option; expected one of {', '.join(options)}")


def _sweep(primary: DictConfig, overrides: list, parser) -> list[list[str]]:
    """The jobs of a -m sweep, each as its overrides, as Hydra's basic sweeper makes them:
    hydra.sweeper.params, then the command line, every combination of the swept values.
    [] for another sweeper, whose jobs are its own."""
    if primary.hydra.runtime.choices.get("hydra/sweeper") != "basic":
        return []
    params = [f"{k}={v}" for k, v in (primary.hydra.sweeper.get("params") or {}).items()]
    columns = {o.get_key_element(): [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
               if o.is_sweep_override() else [_line(o)] for o in parser.parse_overrides(params) + overrides}
    return [list(job) for job in itertools.product(*columns.values())]


def _line(o) -> str:
    """An override as Hydra's basic sweeper writes it into a job's overrides (compile=False, lr=0.001)."""
    return f"{o.get_key_element()}={o.get_value_element_as_str()}"


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """A job's config as the task function gets it: without Hydra's node."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _one_line(err: Exception, overrides: list) -> DfarunError:
    """Hydra's or OmegaConf's compose error in one line. Where it names a key: the key, its value
    and what the schema allows there; a launcher whose plugin is missing: how to install it;
    otherwise Hydra's own words."""
    from hydra.errors import MissingConfigException

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    values = {o.key_or_group: o.value() for o in overrides}
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        return unknown_key(key, values.get(key, values.get(key.rpartition(".")[0])))
    if isinstance(cause, ValidationError) and key:
        top = key.split("[")[0]  # seeds[0] -> seeds
        return ConfigError(top, values[top], f"expected {expected(top)}") if top in values else \
            DfarunError(f"{top}: {first_line(cause)}; expected {expected(top)}")
    if isinstance(err, MissingConfigException) and (err.missing_cfg_file or "").startswith("hydra/launcher/"):
        return ConfigError("hydra/launcher", values.get("hydra/launcher"), f"the Hydra launcher plugin it needs is not "
                           f"installed (no {err.missing_cfg_file}); make install, or pip install 'dfarun[cluster]'")
    return DfarunError(compose_error(err))


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line as Hydra reads it (its flags: hydra.cc/docs/advanced/hydra-command-line-flags);
    a mistake is one line, not argparse's usage."""
    parser = argparse.ArgumentParser(prog="dfarun", add_help=False)
    parser.error = _usage_error
    for flags in ("--help -h", "--hydra-help", "--version", "--resolve", "--run -r", "--multirun -m",
                  "--shell-completion -sc"):
        parser.add_argument(*flags.split(), action="store_true")
    for flags in ("--package -p", "--config-path -cp", "--config-name -cn", "--config-dir -cd", "--experimental-rerun"):
        parser.add_argument(*flags.split())
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument("--info", "-i", nargs="?", const="all",
                        choices=["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"])
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args(argv)


def _usage_error(message: str):
    raise DfarunError(f"{message}; expected dfarun [-m] [key=value ...], flags first (dfarun --help)")


def expand_home(arg: str) -> str:
    """`data_dir=~/data` as zsh, or a quoted bash word, passes it: expanded here as bash would
    have done (Hydra's grammar has no bare ~, and Hydra's own folders would take it literally),
    and quoted for Hydra."""
    key, eq, value = arg.partition("=")
    if key in ("--config-dir", "-cd") and eq:  # a flag, not an override: Hydra takes the path as it is
        return f"{key}={os.path.expanduser(value)}"
    if not (eq and not key.startswith("-") and HOME_PATH.fullmatch(value)):
        return arg
    quoted = _quoted(os.path.expanduser(value))
    return f"{key}={quoted}" if quoted else arg  # a home with a quote in its name: left to Hydra


HOME_PATH = re.compile(r"~[\w./+-]*")  # ~, ~/data, ~user/data: no quotes, commas or brackets to mind


def _quoted(path: str) -> str | None:
    """A path as a quoted value of Hydra's grammar; None where quotes would not keep it as it is."""
    return None if any(c in path for c in "'\\$") else f"'{path}'"


def show_data_dir(argv: list[str]) -> list[str]:
    """--cfg and --help show data_dir's default as the folder it stands for, not as the
    resolver that finds it (conf/config.yaml: ${dfarun.data_dir:})."""
    args, quoted = _parse(argv), _quoted(default_data_dir())
    if not (args.cfg or args.help) or not quoted or any(o.lstrip("+~").startswith("data_dir=") for o in args.overrides):
        return argv
    return [*argv, f"data_dir={quoted}"]
