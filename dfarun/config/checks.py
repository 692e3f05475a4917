"""`validate(cfg)`: one checker for what the schema declares (schema.py: each key's own range,
choices or pattern, and the rules across keys), then the one thing that cannot be declared:
whether the conv net's blocks fit its images.

Each failure is one ConfigError naming the key, the bad value and what is allowed (exit code 2).
What only the machine can refuse (memory, a full disk) is not guessed at here: it fails when it
happens, as one line with its own exit code (cli/guard.py), and nothing trained is lost.
"""
from __future__ import annotations

import dataclasses
import difflib
import operator
import re
import types
import typing
from functools import cache

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dfarun.config.schema import CONF_DIR, FLOAT32_MAX, SEED_END, Config, cross_checks, resolve_device
from dfarun.errors import ConfigError, DfarunError, check, check_folder

BOUNDS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key: every key there and known, no ??? left, each
    value as its field declares, the rules across keys, the conv net's shape, the device and
    the store's and the data's folders (a store must be writable only where seeds are left to
    train: run/job.py checks that)."""
    from dfarun.engine.data import check_data_dir

    check_keys(cfg, Config)
    for key, ok, allowed in cross_checks(cfg):
        value = OmegaConf.select(cfg, key)
        check(ok, key, list(value) if OmegaConf.is_list(value) else value, allowed)
    if cfg.model.channels:
        check_conv(cfg)
    resolve_device(cfg.device)
    check_folder("store", cfg.store, "the run records can be written to", write=False)
    check_data_dir(cfg.dataset.name, cfg.data_dir)


def check_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Every key is in the schema (`+key=` can add one) and none is deleted (`~key`, which the
    schema does not notice) or left at ???; every value resolves and is what its field allows."""
    fields, types = {f.name: f for f in dataclasses.fields(schema)}, _hints(schema)
    raw = OmegaConf.to_container(cfg, resolve=False)
    present = set(cfg.keys())  # `key in cfg` is false for a ??? value too
    for key in fields:
        if key not in present:
            raise DfarunError(f"~{prefix}{key}: keys cannot be deleted; set a value instead, "
                              f"{prefix}{key}=<{expected(prefix + key)}>")
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in fields:
            raise unknown_key(path, raw[key])
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(path, raw[key], f"missing value; expected {expected(path)}")
        if dataclasses.is_dataclass(types[key]):
            check_keys(cfg[key], types[key], f"{path}.")
            continue
        try:
            value = cfg[key]
        except OmegaConfBaseException as err:
            raise ConfigError(path, raw[key], f"cannot be resolved ({str(err).splitlines()[0]})") from None
        value = list(value) if OmegaConf.is_list(value) else value
        if not allows(fields[key].metadata, value):  # worded only when it fails: typing's hints are slow
            raise ConfigError(path, value, f"expected {expected(path)}")


def allows(meta, value) -> bool:
    """`value` is what a field's metadata declares (schema.py lists the keys). None passes: the
    type (checked on compose) says whether null is allowed. NaN fails every bound."""
    if value is None:
        return True
    if isinstance(value, list):
        return (len(value) >= meta.get("min_len", 0) and len(value) == meta.get("length", len(value))
                and not (meta.get("distinct") and len(set(value)) < len(value))
                and all(allows(meta, item) for item in value))
    choices = meta.get("choices")
    return ((choices is None or value in (choices() if callable(choices) else choices))
            and all(op(value, meta[k]) for k, op in BOUNDS.items() if k in meta)
            and ("pattern" not in meta or re.fullmatch(meta["pattern"], value) is not None))


# --- the schema in words, for errors -----------------------------------------------

@cache  # the schema is fixed: its types never change (and typing reads them slowly)
def _hints(schema: type) -> dict:
    return typing.get_type_hints(schema)


@cache
def _field(path: str) -> tuple[object, dict]:
    """The schema's type and metadata at a dotted key ("dataset.train_size", "seeds[0]"),
    (None, {}) where there is none."""
    typ, meta = Config, {}
    for name in re.sub(r"\[\d+\]", "", path).split("."):
        if not dataclasses.is_dataclass(typ):
            return None, {}
        meta = next((f.metadata for f in dataclasses.fields(typ) if f.name == name), {})
        typ = _hints(typ).get(name)
    return typ, meta


def expected(path: str) -> str:
    """What the schema allows at a key, in words: "an int >= 1", "a float in [0, 1) or null", ..."""
    (typ, meta), leaf = _field(path), re.sub(r"\[\d+\]$", "", path).split(".")[-1]
    args = typing.get_args(typ)
    optional = typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        typ = next(a for a in args if a is not type(None))
    choices = meta.get("choices")
    if dataclasses.is_dataclass(typ):
        options = sorted(p.stem for p in (CONF_DIR / leaf).glob("*.yaml"))
        words = f"one of {', '.join(options)}" if options else "a config group option"
    elif "words" in meta:
        words = meta["words"]
    elif choices:
        words = f"one of {', '.join(map(str, choices() if callable(choices) else choices))}"
    elif typing.get_origin(typ) is list:
        words = f"a list of {typing.get_args(typ)[0].__name__}s{_range(meta)}" + (
            ", distinct" if meta.get("distinct") else "") + (", not empty" if meta.get("min_len") else "")
    else:
        words = {int: "an int", float: "a float", bool: "true or false", str: "a string"}.get(
            typ, "a value of the schema's type") + _range(meta)
    return words + (" or null" if optional else "") + (f" ({meta['note']})" if "note" in meta else "")


def _range(meta) -> str:
    """" >= 1", " in (0, 3.4e38]", ...: the bounds in meta, or ""."""
    def num(x) -> str:
        return {FLOAT32_MAX: "3.4e38", SEED_END: "2**63"}.get(x, str(x))
    bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
    if len(bounds) == 2:
        (lo, a), (hi, b) = bounds.items()
        return f" in {'[' if lo == 'ge' else '('}{num(a)}, {num(b)}{']' if hi == 'le' else ')'}"
    return "".join(f" {dict(ge='>=', gt='>', le='<=', lt='<')[k]} {num(v)}" for k, v in bounds.items())


def unknown_key(path: str, value) -> ConfigError:
    """A key the schema does not have: name it, the nearest key there is, and all of them."""
    parent, _, leaf = path.rpartition(".")
    schema = _field(parent)[0] if parent else Config
    keys = list(_hints(schema)) if dataclasses.is_dataclass(schema) else []
    near = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{near[0]}? " if near else ""
    where = f"the keys of {parent}" if parent else "the top-level keys"
    return ConfigError(path, value, f"unknown key; {hint}expected one of {where}: {', '.join(keys) or 'none'} "
                                    f"(keys cannot be added, not even with +{path}=)")


def check_conv(cfg: DictConfig) -> None:
    """A conv net: its pooling blocks must leave at least one pixel of the data set's images."""
    from dfarun.engine.conv import ConvArch
    from dfarun.engine.data import image_shape

    m, shape = cfg.model, image_shape(cfg.dataset)
    last = ConvArch(shape, tuple(m.channels), (), cfg.dataset.classes, m.kernel, m.pool, m.pool_stride).blocks()[-1]
    check(min(last[1:]) >= 1, "model.channels", list(m.channels),
          f"too many pooling blocks for {list(shape)} images (each maps n -> (n - {m.pool}) // {m.pool_stride} + 1)")
