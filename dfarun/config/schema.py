"""Config schema (types, checked by Hydra on compose) and validation (values, checked by us).

The dataclasses mirror `conf/`: one per config group. Registries (rules, activations,
data sets) are closed sets owned by their modules; `validate` checks names against them
so a bad value fails at start with one line, before anything is loaded or written.
`expected` and `unknown_key` word the schema for the errors Hydra raises on compose (cli.py).
"""
from __future__ import annotations

import dataclasses
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dfarun.errors import ConfigError, DfarunError

if TYPE_CHECKING:
    import torch

# conf/ lives at the repository's top level and ships inside the wheel as the package data
# `dfarun/conf` (pyproject.toml maps one onto the other); a checkout uses the top-level folder.
_PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"
CONF_DIR = _PACKAGED_CONF if (_PACKAGED_CONF / "config.yaml").is_file() \
    else Path(__file__).resolve().parents[2] / "conf"
SCHEDULES = ("constant", "auto", "step")
LOGGERS = ("none", "tensorboard")
VAL_SIZE = 10_000  # val=true holds out the last 10,000 training examples (author's split)
DATA_DIR = "~/.cache/dfarun/data"  # data_dir's default where $DFARUN_DATA_DIR is unset or empty



def default_data_dir() -> str:
    """data_dir when none is given: $DFARUN_DATA_DIR (unless empty), else DATA_DIR."""
    return os.environ.get("DFARUN_DATA_DIR") or DATA_DIR


# conf/config.yaml: data_dir: ${dfarun.data_dir:} (oc.env would take an empty variable for a folder)
OmegaConf.register_new_resolver("dfarun.data_dir", default_data_dir, replace=True)
# conf/config.yaml: the sweep folder under ${dfarun.home:${store}}, so that store=~/runs is not a folder named ~
OmegaConf.register_new_resolver("dfarun.home", lambda path: os.path.expanduser(str(path)), replace=True)


INT64 = 2**63


# --- schema -----------------------------------------------------------------------

@dataclass
class DatasetConf:
    name: str = MISSING
    classes: int = MISSING
    lr: float = MISSING                 # RMSprop step for this data set
    train_size: Optional[int] = None    # keep the first n training examples (None: all)
    # synthetic only
    test_size: Optional[int] = None
    features: Optional[int] = None
    noise: float = 0.0
    data_seed: int = 0
    shape: Optional[List[int]] = None   # synthetic only: (C, H, W) of an image, for conv nets
    zca_eps: float = 0.01               # added to the covariance's eigenvalues (pixels in [0, 1])


@dataclass
class ModelConf:
    name: str = MISSING
    label: str = MISSING                # the paper's row name, e.g. "2x800 Tanh"
    depth: int = MISSING                # fully connected hidden layers (after any conv blocks)
    width: int = MISSING                # units per fully connected hidden layer
    activation: str = MISSING
    channels: List[int] = field(default_factory=list)  # conv blocks first (empty: an MLP)
    kernel: int = 5                     # conv k x k, stride 1, padding k // 2 (k odd)
    pool: int = 3                       # max-pool window after each conv
    pool_stride: int = 2


@dataclass
class MethodConf:
    name: str = MISSING


@dataclass
class RegConf:
    name: str = "none"
    label: str = ""                     # appended to the model's row name, e.g. " + DO"
    p_input: float = 0.0                # dropout probability on the input
    p_hidden: float = 0.0               # dropout probability after each hidden layer
    p_conv: List[float] = field(default_factory=list)  # after each conv block (empty: p_hidden)
    eps: float = 0.0                    # fast-gradient-sign step (input units)


@dataclass
class LoggerConf:
    name: str = "none"                  # none | tensorboard (progress.Reporter writes it)


@dataclass
class Config:
    dataset: DatasetConf = MISSING
    model: ModelConf = MISSING
    method: MethodConf = MISSING
    reg: RegConf = field(default_factory=RegConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    profile: str = "default"            # budget profile that set seeds and max_epochs
    table: Optional[int] = None         # the paper table an experiment grid belongs to
    val: bool = False                   # hold out the last VAL_SIZE training examples
    whiten: Optional[bool] = None       # ZCA-whiten the inputs; null: on for conv nets only
    schedule: str = "constant"          # constant | auto (author's halving schedule) | step
    halve_every: int = 0                # schedule=step: epochs between halvings (author's -epoch_step)
    track_alignment: bool = False       # record angles between the rule's updates and BP's
    align_every: int = 100              # steps between alignment measurements
    freeze_first_epochs: int = 0        # the first hidden layer stays at its init this long
    save_weights: bool = False          # write each seed's final weights beside its record
    figure: Optional[str] = None        # the paper figure an experiment belongs to
    seeds: List[int] = field(default_factory=lambda: [0])
    max_epochs: int = 300
    train_epochs: Optional[int] = None  # a row's own training time; max_epochs still caps it
    lr: Optional[float] = None
    rmsprop_init: float = 0.0           # RMSprop's mean square at step 0 (rmsprop.lua: 1 in Jun-Sep 2016)
    batch_size: int = 64
    device: str = "auto"
    data_dir: str = MISSING
    store: str = "runs"
    force: bool = False
    compile: bool = True                # the whole training step as one torch.compile'd graph
    seed_stack: Optional[int] = None    # most seeds trained at once; null: the device's choice (runner)


ConfigStore.instance().store(name="dfarun_schema", node=Config)


# --- validation ---------------------------------------------------------------------

def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check_structure(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Every key is in the schema (`+key=` can add one), none is left at ???, all resolve."""
    fields = typing.get_type_hints(schema)
    raw = OmegaConf.to_container(cfg, resolve=False)
    present = set(cfg.keys())  # `key in cfg` is false for a ??? value too
    for key in fields:  # `~key` deletes a key, which the schema does not notice
        if key not in present:
            raise DfarunError(f"~{prefix}{key}: keys cannot be deleted; set a value instead, "
                              f"{prefix}{key}=<{expected(prefix + key)}>")
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in fields:
            raise unknown_key(path, raw[key])
        _check(not OmegaConf.is_missing(cfg, key), path, raw[key], f"missing value; expected {expected(path)}")
        if dataclasses.is_dataclass(fields[key]):
            check_structure(cfg[key], fields[key], f"{path}.")
            continue
        try:
            value = cfg[key]
        except OmegaConfBaseException as err:
            raise ConfigError(path, raw[key], f"cannot be resolved ({str(err).splitlines()[0]})") from None
        items = list(value) if OmegaConf.is_list(value) else [value]
        # torch and the record format hold 64-bit ints; Python would take any size
        _check(all(-INT64 <= v < INT64 for v in items if isinstance(v, int)), path,
               items if OmegaConf.is_list(value) else value, f"too large for a 64-bit int (|n| < 2**63); expected {expected(path)}")


# --- the schema in words, for errors -----------------------------------------------

def _field(path: str):
    """The schema's type at a dotted key ("dataset.train_size", "seeds[0]"), or None."""
    typ = Config
    for name in re.sub(r"\[\d+\]", "", path).split("."):
        if not dataclasses.is_dataclass(typ):
            return None
        typ = typing.get_type_hints(typ).get(name)
    return typ


def expected(path: str) -> str:
    """What the schema allows at a key, in words: "an int", "a float or null", ..."""
    typ, leaf = _field(path), re.sub(r"\[\d+\]$", "", path).split(".")[-1]
    args = typing.get_args(typ)
    optional = typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        typ = next(a for a in args if a is not type(None))
    words = {int: "an int", float: "a float", bool: "true or false", str: "a string"}.get(typ)
    if typing.get_origin(typ) is list:
        words = f"a list of {_item(typing.get_args(typ)[0])}s, e.g. {leaf}=[0,1,2]"
    elif dataclasses.is_dataclass(typ):
        options = sorted(p.stem for p in (CONF_DIR / leaf).glob("*.yaml"))
        words = f"one of {', '.join(options)}" if options else "a config group option"
    return (words or "a value of the schema's type") + (" or null" if optional else "")


def _item(typ) -> str:
    return {int: "int", float: "float", bool: "bool", str: "string"}.get(typ, "value")


def unknown_key(path: str, value) -> ConfigError:
    """A key the schema does not have: name it, and list the keys that are there."""
    parent = path.rpartition(".")[0]
    schema = _field(parent) if parent else Config
    keys = ", ".join(typing.get_type_hints(schema)) if dataclasses.is_dataclass(schema) else "none"
    where = f"the keys of {parent}" if parent else "the top-level keys"
    return ConfigError(path, value, f"unknown key; expected one of {where}: {keys} (keys cannot be "
                                    f"added, not even with +{path}=)")


def effective_lr(cfg: DictConfig) -> float:
    return float(cfg.lr if cfg.lr is not None else cfg.dataset.lr)


def epoch_limit(cfg: DictConfig | dict) -> int:
    """The most epochs a seed trains: the budget's max_epochs, or a row's shorter training time
    (train_epochs: the dropout row's, chosen on validation), so profile=quick still caps it.
    A composed config, or the config a record keeps (which may predate train_epochs)."""
    train = cfg.get("train_epochs")
    return cfg["max_epochs"] if train is None else min(cfg["max_epochs"], train)


def conv_dropout(cfg: DictConfig) -> tuple[float, ...]:
    """reg.p_conv where there are conv blocks; an MLP has none, so its own is ()."""
    return tuple(cfg.reg.p_conv) if cfg.model.channels else ()


def row_label(cfg: DictConfig) -> str:
    """The paper's row name: the model's label plus the regulariser's, e.g. "2x800 Tanh + DO"."""
    return cfg.model.label + cfg.reg.label


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device that exists here."""
    import torch  # here, not at the top: the CLI reports a bad override without importing torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _check(name == "cpu" or re.fullmatch(r"cuda(:\d+)?", name) is not None,
           "device", name, "expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(name.split(":")[1]) if ":" in name else 0
        _check(index < count, "device", name,
               f"no such CUDA device here ({count} visible); use device=cpu or device=auto")
    return torch.device(name)
