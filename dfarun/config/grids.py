"""The paper's grids and rows, kept whole: the command line checked against conf/experiment/
and conf/row/ before anything is composed.

An experiment (`experiment=table1`) is a grid of jobs (its `hydra.sweeper.params`) and fixes
what all of them share (data set, model, ...); a row (`row=2x800_tanh_do`) fixes a model and
a regulariser. Hydra lets a later override win over either without a word, so that
`row=2x800_tanh_do model=3x50_tanh` would train 3x50 under the row's name. Here that is an
error; what stays allowed is narrowing a grid (`-m experiment=table1 method=dfa`) and changing
an experiment's budget (`profile=quick`, `seeds=`, `max_epochs=`).
"""
from __future__ import annotations

import re
from functools import lru_cache

from omegaconf import OmegaConf

from dfarun.config.schema import CONF_DIR
from dfarun.errors import ConfigError

OWNERS = ("experiment", "row")          # the groups whose options fix other keys
BUDGET = ("profile", "seeds", "max_epochs")  # what an experiment sets that a command may change
_OPTION = re.compile(r"[A-Za-z0-9_.-]+")


@lru_cache(maxsize=None)
def option_file(group: str, option: str) -> dict:
    """conf/<group>/<option>.yaml as a dict; {} where there is none (compose names the option;
    a record may name an option since renamed)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not _OPTION.fullmatch(option) or not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def fixes(group: str, option: str) -> dict:
    """What an experiment or row fixes: {group: option} of each `override /group`, and
    {key: value} of each top-level key (the budget and Hydra's settings left out)."""
    conf = option_file(group, option)
    out = {}
    for entry in conf.get("defaults") or []:
        if isinstance(entry, dict):
            for name, value in entry.items():
                if name.startswith("override /"):
                    out[name[len("override /"):]] = value
    out.update({k: v for k, v in conf.items() if k not in ("defaults", "hydra")})
    return {k: v for k, v in out.items() if k not in BUDGET}


def grid(experiment: str) -> dict[str, list[str]]:
    """An experiment's grid: {key: the values it sweeps}, {} for a single job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = ((option_file("experiment", experiment).get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_string()]
            for o in parsed}


def check_command_line(overrides: list, multirun: bool) -> None:
    """One experiment per command; a grid only with -m; a grid key only narrowed."""
    chosen = [o for o in overrides if o.key_or_group == "experiment" and not o.is_delete()]
    for o in chosen:
        if o.is_sweep_override():
            raise ConfigError("experiment", o.get_value_string(), "one experiment per command; run each "
                                                                   "with its own dfarun -m experiment=NAME")
    name = chosen[-1].value() if chosen else None
    if not isinstance(name, str) or not (params := grid(name)):
        return
    if not multirun:
        jobs = " x ".join(f"{len(v)} {k}s" for k, v in params.items())
        raise ConfigError("experiment", name, f"is a grid of jobs ({jobs}); run it with -m: dfarun -m experiment={name}")
    for o in overrides:
        if o.key_or_group not in params or o.is_delete():
            continue
        try:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_string()]
        except Exception:  # glob() needs Hydra's config loader: list the values instead
            values = [o.get_value_string()]
        if not set(values) <= set(params[o.key_or_group]):
            raise ConfigError(o.key_or_group, _shown(o),
                              f"not in experiment={name}'s grid; expected some of {','.join(params[o.key_or_group])}")


def check_job(overrides: list) -> None:
    """No override of one job contradicts its experiment or row: a group or key they set, set
    to another value, or a key inside a group they set (model.width with a row)."""
    owners = {o.key_or_group: o.value() for o in overrides
              if o.key_or_group in OWNERS and not o.is_delete() and isinstance(o.value(), str)}
    for group, option in owners.items():
        fixed = fixes(group, option)
        for o in overrides:
            key = o.key_or_group
            if key in OWNERS or o.is_delete() or o.is_sweep_override():
                continue
            top = key.split(".")[0]
            if key in fixed and o.value() != fixed[key]:
                raise ConfigError(key, _shown(o), f"contradicts {group}={option}, which sets "
                                                             f"{key}={_text(fixed[key])}; drop one of the two")
            if key != top and top in fixed:
                raise ConfigError(key, _shown(o), f"changes the {top} that {group}={option} sets "
                                                             f"({fixed[top]}); drop {group}= to train another {top}")


def _shown(o):
    """An override's value as the error shows it: parsed (100, not '100'); a sweep as written."""
    return o.get_value_string() if o.is_sweep_override() else o.value()


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # as it is written on the command line
