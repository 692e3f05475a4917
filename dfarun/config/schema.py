"""Config schema: the dataclasses mirroring `conf/` (one per config group), each value's type
(Hydra checks it on compose) and what the value may be, declared beside it.

A field's metadata says what its value may be; checks.validate reads it, and checks.expected words
it for every error, Hydra's on compose included:
  ge, gt, le, lt   bounds (on each item of a list)
  choices          a tuple, or a function that reads an engine registry when it is checked
                   (those modules import torch; config must not at import)
  pattern          a regular expression the whole string matches
  length, min_len, distinct   of a list
  words, note      the allowed values in words instead of generated ones; a note after them
`cross_checks` are the rules that span keys; checks.py reads all of it.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TYPE_CHECKING, Callable, Iterator, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dfarun.errors import check

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
MAX_DEPTH = 1000  # hidden layers; the paper's deepest net has 100 (each layer costs Python time)
FLOAT32_MAX = 3.4028234663852886e38  # rates and scales meet float32 tensors: larger is inf there
F32 = "float32's range"
SEED_END = 2**63  # torch.Generator.manual_seed takes 64-bit ints (state.py adds offsets < 2**34)
SEEDS = "torch's seeds are 64-bit ints"
# reg.name goes into records and tables as what the run did: it must say what reg's values do,
# so that reg.name=dropout alone (no probabilities) is refused rather than trained without dropout
REGULARISERS = {"none": (False, False), "dropout": (True, False), "adversarial": (False, True)}  # (dropout, FGS)


def default_data_dir() -> str:
    """data_dir when none is given: $DFARUN_DATA_DIR (unless empty), else DATA_DIR."""
    return os.environ.get("DFARUN_DATA_DIR") or DATA_DIR


# conf/config.yaml: data_dir: ${dfarun.data_dir:} (oc.env would take an empty variable for a folder)
OmegaConf.register_new_resolver("dfarun.data_dir", default_data_dir, replace=True)
# conf/config.yaml: the sweep folder under ${dfarun.home:${store}}, so that store=~/runs is not a folder named ~
OmegaConf.register_new_resolver("dfarun.home", lambda path: os.path.expanduser(str(path)), replace=True)


# --- the closed sets of names, read when checked ------------------------------------------------

def registry(name: str) -> Callable[[], list[str]]:
    """An engine registry's names, read when checked: those modules import torch, config must not."""
    def names() -> list[str]:
        from dfarun.engine import data, nets, rules
        return sorted({"RULES": rules.RULES, "ACTIVATIONS": nets.ACTIVATIONS, "LOADERS": data.LOADERS}[name])
    return names


@lru_cache(maxsize=None)
def figures() -> tuple[str, ...]:
    """The `figure:` names the experiments in conf/experiment/ set."""
    names = {OmegaConf.load(p).get("figure") for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))}
    return tuple(sorted(n for n in names if n))


def value(default=MISSING, **allowed):
    """A field with what its value may be (the module's docstring lists the keys); a callable
    default is a factory."""
    if callable(default):
        return field(default_factory=default, metadata=allowed)
    return field(default=default, metadata=allowed)


PROBABILITY = dict(ge=0, lt=1)
SCALE = dict(ge=0, le=FLOAT32_MAX, note=F32)
RATE = dict(gt=0, le=FLOAT32_MAX, note=F32)
FOLDER = r"(?s).*\S.*"  # anything but blank: the folder's own checks (errors.check_folder) come later


# --- schema -----------------------------------------------------------------------

@dataclass
class DatasetConf:
    name: str = value(choices=registry("LOADERS"))
    classes: int = value(ge=2)
    lr: float = value(**RATE)                       # RMSprop step for this data set
    train_size: Optional[int] = value(None, ge=1)   # keep the first n training examples (None: all)
    # synthetic only
    test_size: Optional[int] = value(None, ge=1)
    features: Optional[int] = value(None, ge=1)
    noise: float = value(0.0, **SCALE)
    data_seed: int = value(0, ge=0, lt=SEED_END, note=SEEDS)
    shape: Optional[List[int]] = value(None, ge=1, length=3, words="[C,H,W], three ints >= 1")  # an image's, for conv nets
    zca_eps: float = value(0.01, **RATE)            # added to the covariance's eigenvalues (pixels in [0, 1])


@dataclass
class ModelConf:
    name: str = value(pattern=r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}",  # it names every record file
                      words="1 to 64 letters, digits or _.+- starting with a letter or digit (it names the record files)")
    label: str = MISSING                # the paper's row name, e.g. "2x800 Tanh"
    depth: int = value(ge=1, le=MAX_DEPTH)  # fully connected hidden layers (after any conv blocks)
    width: int = value(ge=1)            # units per fully connected hidden layer
    activation: str = value(choices=registry("ACTIVATIONS"))
    channels: List[int] = value(list, ge=1)  # conv blocks first (empty: an MLP)
    kernel: int = value(5, ge=1)        # conv k x k, stride 1, padding k // 2 (k odd: cross_checks)
    pool: int = value(3, ge=1)          # max-pool window after each conv
    pool_stride: int = value(2, ge=1)


@dataclass
class MethodConf:
    name: str = value(choices=registry("RULES"))


@dataclass
class RegConf:
    name: str = value("none", choices=tuple(REGULARISERS))
    label: str = ""                     # appended to the model's row name, e.g. " + DO"
    p_input: float = value(0.0, **PROBABILITY)   # dropout probability on the input
    p_hidden: float = value(0.0, **PROBABILITY)  # dropout probability after each hidden layer
    p_conv: List[float] = value(list, **PROBABILITY)  # after each conv block (empty: p_hidden)
    eps: float = value(0.0, **SCALE)    # fast-gradient-sign step (input units)


@dataclass
class LoggerConf:
    name: str = value("none", choices=LOGGERS)  # progress.Reporter writes it


@dataclass
class Config:
    dataset: DatasetConf = MISSING
    model: ModelConf = MISSING
    method: MethodConf = MISSING
    reg: RegConf = field(default_factory=RegConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    profile: str = "default"            # budget profile that set seeds and max_epochs
    table: Optional[int] = value(None, choices=(1, 2, 3))  # the paper table an experiment grid belongs to
    val: bool = False                   # hold out the last VAL_SIZE training examples
    whiten: Optional[bool] = None       # ZCA-whiten the inputs; null: on for conv nets only
    schedule: str = value("constant", choices=SCHEDULES)  # auto: author's halving schedule
    halve_every: int = value(0, ge=0)   # schedule=step: epochs between halvings (author's -epoch_step)
    track_alignment: bool = False       # record angles between the rule's updates and BP's
    align_every: int = value(100, ge=1, note="steps")  # steps between alignment measurements
    freeze_first_epochs: int = value(0, ge=0)  # the first hidden layer stays at its init this long
    save_weights: bool = False          # write each seed's final weights beside its record
    figure: Optional[str] = value(None, choices=figures)  # the paper figure an experiment belongs to
    seeds: List[int] = value(lambda: [0], ge=0, lt=SEED_END, distinct=True, min_len=1,
                             note=f"e.g. seeds=[0,1,2]; {SEEDS}")
    max_epochs: int = value(300, ge=1)
    train_epochs: Optional[int] = value(None, ge=1)  # a row's own training time; max_epochs still caps it
    lr: Optional[float] = value(None, **RATE)  # null: the data set's rate
    rmsprop_init: float = value(0.0, **SCALE)  # RMSprop's mean square at step 0 (rmsprop.lua: 1 in Jun-Sep 2016)
    batch_size: int = value(64, ge=1)
    device: str = value("auto", pattern=r"auto|cpu|cuda(:\d+)?", words="auto, cpu, cuda or cuda:N")
    data_dir: str = value(pattern=FOLDER, words="a folder (data_dir=. for the current one)")
    store: str = value("runs", pattern=FOLDER, words="a folder (store=. for the current one)")
    force: bool = False
    # the training step as one torch.compile'd graph: true, false, or auto (where the job's steps
    # earn back the compile time: engine.step.compile_pays)
    compile: Any = value("auto", choices=("auto", True, False), words="auto, true or false")
    seed_stack: Optional[int] = value(None, ge=1)  # most seeds trained at once; null: the device's choice (runner)


ConfigStore.instance().store(name="dfarun_schema", node=Config)


# --- the rules across keys ----------------------------------------------------------

def _published(name: str) -> tuple[int | None, int | None]:
    """(classes, training examples) of a real data set; (None, None) for the synthetic one."""
    from dfarun.engine.hyp import CLASSES, SIZES
    return CLASSES.get(name), SIZES.get(name, (None,))[0]


def cross_checks(c: DictConfig) -> Iterator[tuple[str, bool, str]]:
    """The rules that span keys, in order, each as (key, ok, what is allowed): validate raises
    ConfigError, with the key's value, on the first that is not ok (after every key's own)."""
    d, m, reg = c.dataset, c.model, c.reg
    classes, n_train = _published(d.name)
    yield ("logger.name", c.logger.name != "tensorboard" or importlib.util.find_spec("tensorboard") is not None,
           "the tensorboard package is not installed (make install, or pip install 'dfarun[tensorboard]')")
    if classes is None:  # synthetic: generated to its sizes, so every one is given
        for k in ("train_size", "test_size", "features"):
            yield f"dataset.{k}", d[k] is not None, "expected an int >= 1 (synthetic data is generated to this size)"
        yield ("dataset.shape", d.shape is None or math.prod(d.shape) == d.features,
               f"expected C*H*W = dataset.features ({d.features})")
    else:  # a real data set: its sizes are the files'; the synthetic-only keys would be silently ignored
        yield "dataset.classes", d.classes == classes, f"expected {classes}: {d.name} has {classes} classes"
        yield ("dataset.train_size", (d.train_size or 0) <= n_train,
               f"expected null or an int in [1, {n_train}]: {d.name} has {n_train} training examples")
        for k in ("test_size", "features", "shape", "noise", "data_seed"):
            default = DatasetConf.__dataclass_fields__[k].default
            yield (f"dataset.{k}", d[k] == default,
                   f"synthetic data only; expected {'null' if default is None else default} for {d.name}")
    if c.schedule == "step":
        yield "halve_every", c.halve_every >= 1, "expected an int >= 1 (epochs between halvings) with schedule=step"
    else:
        yield "halve_every", c.halve_every == 0, f"expected 0: read only with schedule=step (schedule is {c.schedule})"
    dropout = bool(reg.p_input or reg.p_hidden or any(conv_dropout(c)))
    names = [name for name, does in REGULARISERS.items() if does == (dropout, reg.eps > 0)]
    yield "reg.name", reg.name in names, f"does not match reg's values (dropout {'on' if dropout else 'off'}, " \
        f"eps={reg.eps}): " + (f"expected {names[0]} for these values, or reg={reg.name} alone for its own" if names
                               else "dropout and adversarial training together have no name here (the paper "
                                    "never combines them)")
    yield ("val", not c.val or (d.train_size or n_train) > VAL_SIZE,  # VAL_SIZE read now: tests shrink it
           f"needs more than {VAL_SIZE} training examples (dataset.train_size={d.train_size or n_train})")
    yield "model.kernel", m.kernel % 2 == 1, "expected an odd int >= 1"
    if m.channels:  # a conv net: the rule must know conv nets, the data be images, p_conv fit the blocks
        from dfarun.engine.rules import RULES
        yield ("method.name", RULES[c.method.name].conv, "not defined for conv nets (model.channels set); "
               f"expected one of {sorted(k for k, r in RULES.items() if r.conv)}")
        yield ("dataset.shape", classes is not None or d.shape is not None,
               "a conv net needs images: set dataset.shape=[C,H,W] with C*H*W = dataset.features")
        yield ("reg.p_conv", len(reg.p_conv) in (0, len(m.channels)),
               f"expected [] or one probability per conv block ({len(m.channels)})")


# --- what a config means -------------------------------------------------------------

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
    """auto | cpu | cuda | cuda:N (a validated config's) -> a device that exists here."""
    import torch  # here, not at the top: the CLI reports a bad override without importing torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):  # the name's form is the schema's (Config.device)
        count = torch.cuda.device_count()
        index = int(name.split(":")[1]) if ":" in name else 0
        check(index < count, "device", name,
              f"no such CUDA device here ({count} visible); use device=cpu or device=auto")
    return torch.device(name)
