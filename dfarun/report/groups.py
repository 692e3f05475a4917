"""`--by KEYS`: any store summarised, one group per value of the settings a user names.

    dfarun-tables --store S --by method.name,lr [--where model.name=2x800_tanh]
    dfarun-figures curves --store S --by method.name,lr

A key is a dotted config key (`lr`, `method.name`, `dataset.train_size`), as the record keeps
its config; a record made before a key existed has that key's default (a new setting's default
keeps the old behaviour). Every record in the store counts: paper cells or not, any data set,
other settings too; a group is every record with those values, of as many experiments as the
keys do not tell apart (its `experiments` column). Its numbers are those of a paper cell
(records.summary), written the same way (text.error_text); the paper's tables are the view
`(data set, row label, method)`, with one experiment chosen per cell.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from functools import cache
from types import SimpleNamespace
from typing import Iterable

import pandas as pd
from omegaconf import OmegaConf

from dfarun.config.grids import option_file
from dfarun.config.schema import DatasetConf, MethodConf, ModelConf, RegConf
from dfarun.report import records
from dfarun.report.text import DASH, demo_words, error_text, files, legend_extras, stop_words
from dfarun.run.experiment import RUNTIME_KEYS, defaults
from dfarun.run.record import Record

_NOWHERE = object()
GROUPS = {"dataset": DatasetConf, "model": ModelConf, "method": MethodConf, "reg": RegConf}


class Refused(ValueError):
    """A --by or --where the records cannot answer: the reason, as `--by=...: ...`."""


# --- settings by dotted key -----------------------------------------------------------------------

def _at(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _NOWHERE
        tree = tree[part]
    return tree


def value(r: Record, key: str):
    """The setting `key` of the record's run: its config's, else the schema's default (None
    where the schema has none)."""
    found = _at(r.config, key)
    if found is _NOWHERE:
        found = _schema_default(key)
    return None if found is _NOWHERE else found


@cache
def _schema_default(key: str):
    """A setting's default; a group's fields (model.kernel) by the group's own schema
    (ModelConf), since Config leaves the group to conf/ ("???"). _NOWHERE where it has none."""
    found = _at(defaults(), key)
    group, _, rest = key.partition(".")
    if group in GROUPS and (found is _NOWHERE or found == "???"):
        found = _at(OmegaConf.to_container(OmegaConf.structured(GROUPS[group])), rest)
    return found


def show(v) -> str:
    """A setting as an override would write it: 0.001, dfa, null, true, [64,64]."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _order(v) -> tuple:
    """Groups in a natural order: null, booleans, numbers (by value), text, the rest."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float)):
        return (2, v)
    return (3, v) if isinstance(v, str) else (4, show(v))


def keys(text: str, recs: list[Record], option: str = "--by") -> list[str]:
    """The comma-separated dotted keys of `text`, each a setting (not a group of them) of the
    schema or of some record; Refused naming the first that is not."""
    names = [k.strip() for k in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise Refused(f"{option}={text!r}: expected distinct dotted config keys, comma-separated (e.g. method.name,lr)")
    for key in names:
        found = [v for v in (_at(defaults(), key), *(_at(r.config, key) for r in recs)) if v is not _NOWHERE]
        if not found:
            known = {*_flat(defaults()), *(k for r in recs[:1] for k in _flat(r.config))}
            like = difflib.get_close_matches(key, known, n=3) or ["method.name", "lr", "model.name"]
            raise Refused(f"{option}={text!r}: {key} is no setting of these records or of dfarun's config "
                          f"(did you mean {' or '.join(like)}?)")
        if any(isinstance(v, dict) for v in found):
            schema = dataclasses.fields(GROUPS[key]) if key in GROUPS else ()
            inner = ", ".join(f"{key}.{k}" for k in sorted({k for v in found if isinstance(v, dict) for k in v}
                                                           | {f.name for f in schema}))
            raise Refused(f"{option}={text!r}: {key} is a group of settings; name one: {inner}")
    return names


def where(recs: list[Record], conditions: Iterable[str]) -> list[Record]:
    """The records whose setting KEY is VALUE for every `KEY=VALUE` (numbers by value: 1e-3
    is 0.001)."""
    for condition in conditions:
        key, sep, wanted = condition.partition("=")
        if not sep:
            raise Refused(f"--where={condition!r}: expected KEY=VALUE, e.g. model.name=2x800_tanh")
        key = keys(key, recs, "--where")[0]
        recs = [r for r in recs if _matches(value(r, key), wanted.strip())]
    return recs


def select(recs: list[Record], by_text: str, conditions: list[str]) -> tuple[list[str], list[Record], dict[str, str]]:
    """A --by view's (keys, records, filter): the keys of `by_text`, the records every
    --where condition holds for, and the filter as they have it, key -> value (shown: `lr=1e-3`
    is lr=0.001), for file names and CSV columns. Refused where nothing is left."""
    if not recs:
        raise Refused("no valid run records in this store")
    by = keys(by_text, recs)
    recs = where(recs, conditions)
    if not recs:
        raise Refused(f"--where={' '.join(conditions)!r}: no record has these settings")
    filters = {key: show(value(recs[0], key)) for key in (c.partition("=")[0].strip() for c in conditions)}
    return by, recs, filters


def stem(prefix: str, by: list[str], filters: dict[str, str]) -> str:
    """A view's file name, less its suffix: `by_lr+where_method.name=dfa`, so that views of
    other filters do not overwrite each other (a path separator in a value is written `_`)."""
    name = prefix + "+".join(by) + "".join(f"+where_{k}={v}" for k, v in filters.items())
    return name.replace("/", "_").replace("\\", "_")


def _matches(v, wanted: str) -> bool:
    if show(v) == wanted:
        return True
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and float(wanted) == v
    except ValueError:
        return False


def group(recs: Iterable[Record], by: list[str]) -> dict[tuple, list[Record]]:
    """(the values of `by`, shown) -> the records with them, groups in natural order."""
    raw: dict[tuple, list[Record]] = {}
    for r in recs:
        raw.setdefault(tuple(show(value(r, k)) for k in by), []).append(r)
    first = {vals: tuple(_order(value(rs[0], k)) for k in by) for vals, rs in raw.items()}
    return {vals: raw[vals] for vals in sorted(raw, key=first.__getitem__)}


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = show(v)
    return out


def shared(recs: list[Record]) -> dict[str, str]:
    """The settings every record of `recs` ran with, dotted key -> value: those a user changed
    (off what the record's options set, else off the schema's defaults: so model.width=800 of
    model=1x800_tanh is not listed, model.name is), where and how a run ran aside. The record's
    `lr` is the effective rate; `dataset.lr` is listed only where a user changed the data
    set's own."""
    flats = {}  # one per experiment: its key hashes its settings
    for r in recs:
        if r.key not in flats:
            flat = _flat({k: v for k, v in r.config.items() if k not in RUNTIME_KEYS})
            flats[r.key] = {k: v for k, v in flat.items() if _unchanged(r, k) != v}
    common, *rest = flats.values()
    return {k: v for k, v in common.items() if all(f.get(k) == v for f in rest)}


def _unchanged(r: Record, key: str) -> str | None:
    """What setting `key` of the record is where no user changed it, as text (show): what its
    option's conf file sets (conf/dataset/mnist.yaml: dataset.classes), the data set's rate
    for `lr` (null in the schema: the data set's), else the schema's default; None where
    none says."""
    if key == "lr":
        return _default("lr") if (own := _at(r.config, "dataset.lr")) is _NOWHERE else show(own)
    group, _, rest = key.partition(".")
    if group in GROUPS and rest != "name" and isinstance(option := _at(r.config, f"{group}.name"), str):
        found = _at(option_file(group, option), rest)
        if found is not _NOWHERE:
            return show(found)
    return _default(key)


@cache
def _default(key: str) -> str | None:
    """A setting's default as text (show); None where it has none."""
    found = _schema_default(key)
    return None if found is _NOWHERE else show(found)


# --- the table ---------------------------------------------------------------------------------------

CSV = ["test_mean", "test_std", "train_mean", "seeds_learned", "seeds_run", "experiments", "epochs_mean",
       "max_epochs", "stop", "demo", "shared"]


def render(recs: list[Record], by_text: str, conditions: list[str], generated: str) -> tuple[dict[str, str], str]:
    """({by_<keys>[+where_<key>=<value>...].md/.tex/.csv: text}, the Markdown to print) for
    `dfarun-tables --by`."""
    by, recs, filters = select(recs, by_text, conditions)
    groups = group(recs, by)
    everywhere = shared(recs)
    shown, numbers = [], []
    for vals, rs in groups.items():
        s = records.summary(rs) | {"experiments": len({r.key for r in rs})}
        s["seeds_asked"] = s["seeds_run"]  # across experiments, n= counts the seeds run
        own = ", ".join(f"{k}={v}" for k, v in sorted(shared(rs).items()) if k not in by and everywhere.get(k) != v)
        cell = SimpleNamespace(**s)
        shown.append(dict(zip(by, vals)) | {
            "test error": error_text(cell), "train error": f"{s['train_mean']:.2f}%" if s["seeds_learned"] else DASH,
            "seeds": f"{s['seeds_learned']}/{s['seeds_run']}", "experiments": s["experiments"],
            "epochs (mean)": f"{s['epochs_mean']:.0f}", "stop": stop_words(s["stop"]), "shared settings": own})
        numbers.append(dict(zip(by, vals)) | {k: v for k, v in filters.items() if k not in by}
                       | {k: s.get(k) for k in CSV[:-1]} | {"shared": own})
    legend = ("Test error over the seeds that learned (a seed learned: it did not diverge and its training error "
              f"is below 90% of chance); {DASH} where none did; seeds: learned / run; n= where fewer learned "
              "than ran.")
    legend += "".join(f" {extra}." for extra in legend_extras((SimpleNamespace(**s) for s in numbers),
                                                              demo_words(recs)))
    common = {k: v for k, v in everywhere.items() if k not in by and k not in RUNTIME_KEYS}
    footer = [legend, f"Every record here shares: {', '.join(f'{k}={v}' for k, v in sorted(common.items()))}."
              if common else "The records share no setting off dfarun's defaults.",
              *([f"Only records with {', '.join(conditions)}."] if conditions else []), generated]
    demo = " (demo)" if all(n["demo"] for n in numbers) else ""
    title = (f"Test error by {', '.join(by)}{demo}: mean ± std over seeds ({len(recs)} records, {len(groups)} "
             f"group{'s' * (len(groups) != 1)})")
    columns = [*by, *(k for k in filters if k not in by), *CSV]
    texts = files(title, [_telling(pd.DataFrame(shown), by)], footer, pd.DataFrame(numbers, columns=columns))
    name = stem("by_", by, filters)
    return {f"{name}.{ext}": text for ext, text in texts.items()}, texts["md"]


def _telling(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The table for people less the columns that tell nothing (the CSV keeps them all): one
    empty in every row, and `experiments` where every group is one experiment (the usual case;
    the column is there to say when a group mixes several)."""
    silent = [c for c in frame if c not in by and (frame[c].astype(str) == "").all()]
    if (frame["experiments"] == 1).all():
        silent.append("experiments")
    return frame.drop(columns=silent)
