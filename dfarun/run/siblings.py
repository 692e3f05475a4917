"""An experiment's siblings in a store: the other experiments of its data set, model and method
that have records there, and the settings in which each differs. A changed setting (another
`max_epochs`, `lr`, ...) is another experiment, with another key (store.experiment_key), trained
from scratch: job.py says so, naming the settings, instead of retraining without a word.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dfarun.config.schema import Config
from dfarun.run import store

_RECORD_NAME = re.compile(r"([0-9a-f]{10})_seed\d+\.json")  # after store's "<dataset>_<model>_<method>_"


def own_records(cfg: DictConfig) -> list[Path]:
    """The record files of this experiment in the store, any seed (whole or not)."""
    return _records_by_key(cfg).get(store.experiment_key(cfg), [])


def differing(cfg: DictConfig) -> list[dict[str, tuple]]:
    """For each other experiment of this data set, model and method with records in the store,
    newest first: the settings in which it differs from this one (`differences`)."""
    ours, own, found = store.experiment(cfg), store.experiment_key(cfg), []
    for key, paths in _records_by_key(cfg).items():
        if key == own:
            continue
        for path in sorted(paths, key=_mtime, reverse=True):  # the newest readable record speaks for its key
            config = (store.read(path) or {}).get("config")
            if isinstance(config, dict) and all(isinstance(config.get(part), dict)
                                                and config[part].get("name") == cfg[part].name
                                                for part in ("dataset", "model", "method")):
                if diff := differences(ours, config):
                    found.append((_mtime(path), diff))
                break
    return [diff for _, diff in sorted(found, key=lambda pair: pair[0], reverse=True)]


def differences(ours: dict, theirs: dict) -> dict[str, tuple]:
    """The settings in which two experiments differ, {dotted key: (ours, theirs)}, in key order;
    each is store.experiment(cfg) or a record's config. A setting one lacks is at its default."""
    a, b = _flat(store.settings(ours)), _flat(store.settings(theirs))
    defaults = _flat(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))
    out = {}
    for key in sorted(a.keys() | b.keys()):
        mine, other = a.get(key, defaults.get(key)), b.get(key, defaults.get(key))
        if mine != other:
            out[key] = (mine, other)
    return out


def _records_by_key(cfg: DictConfig) -> dict[str, list[Path]]:
    """The store's record files of this data set, model and method, by experiment key."""
    prefix = f"{cfg.dataset.name}_{cfg.model.name}_{cfg.method.name}_"
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(Path(cfg.store).expanduser()) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and (m := _RECORD_NAME.fullmatch(entry.name[len(prefix):])):
                    found.setdefault(m[1], []).append(Path(entry.path))
    except OSError:  # no store yet
        return {}
    return found


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0
