"""The experiment: the part of a config that changes the numbers, and what a record's key hashes.

`experiment(cfg)` is a composed config less where and how it ran (RUNTIME_KEYS);
`settings(config)` is what of it, or of the config a record keeps, differs from the schema's
defaults: what store.experiment_key hashes, and what report/ compares records by.
"""
from functools import cache

from omegaconf import DictConfig, OmegaConf

from dfarun.config.schema import Config, effective_lr

# not part of the experiment: where and how it ran, and how it was grouped
RUNTIME_KEYS = ("seeds", "device", "data_dir", "store", "force", "compile", "save_weights", "profile",
                "table", "figure", "logger", "seed_stack")


def experiment(cfg: DictConfig) -> dict:
    """A composed config as its records keep it: resolved, with the effective rate, less RUNTIME_KEYS."""
    exp = OmegaConf.to_container(cfg, resolve=True)
    exp["lr"] = effective_lr(cfg)
    return {k: v for k, v in exp.items() if k not in RUNTIME_KEYS}


def settings(config: dict) -> dict:
    """The experiment's settings that differ from the schema's defaults: what the key hashes.
    `config` is experiment(cfg), or the config a record keeps (which has the effective rate too).
    A new setting whose default keeps the old behaviour leaves existing records findable.
    (Changing a default's value therefore changes what old records mean: bump record.FORMAT.)"""
    return _differences({k: v for k, v in config.items() if k not in RUNTIME_KEYS}, defaults())


@cache
def defaults() -> dict:
    """The schema's defaults (config.schema.Config), built once: a reader of 10,000 records
    asks for them 10,000 times. Not to be changed by the caller."""
    return OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)


def _differences(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        default = defaults.get(key, _ABSENT)
        if isinstance(value, dict) and isinstance(default, dict):
            out[key] = _differences(value, default)
        elif value != default:
            out[key] = value
    return out


_ABSENT = object()
