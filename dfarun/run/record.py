"""A run record's format as readers take it: the fields the tables and figures use, each
checked once (`parse`), and THE definition of a seed that learned.

The runner writes records (store.write, provenance.record); `store.finished` and every reader
go through `parse`, so what passes here can be tabulated and plotted without further checks.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dfarun.config.schema import epoch_limit

CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}  # for records whose config lacks dataset.classes
STOPS = ("converged", "max_epochs", "schedule_end", "diverged")  # the order stop reasons are listed in
NO_LEARNING = 0.9  # a seed has not learned while its train error is >= 90% of chance error


# --- the record ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """The fields of one seed's record that the tables and figures use, checked."""
    path: Path
    dataset: str
    classes: int
    model: str
    method: str
    reg: str
    row: str             # the paper's row label, e.g. "2x800 Tanh + DO"
    freeze: int          # epochs the first layer stayed frozen (Figure 2 left); 0 for the tables
    key: str             # the experiment
    seed: int
    seeds: tuple[int, ...]  # the seeds the job asked for
    profile: str
    max_epochs: int      # the most epochs a seed could run: config.max_epochs, or a row's shorter train_epochs
    epochs: int
    stop: str
    train_error: float | None  # at the reported epoch: best_val's when there is one; None if diverged
    test_error: float | None
    history: tuple[dict, ...] = field(compare=False, repr=False)
    config: dict = field(compare=False, repr=False)
    device: str = field(default="cpu", compare=False)  # "cpu", or the GPU's name (the headline's costs)
    threads: int = field(default=1, compare=False)     # torch's CPU threads in the job

    @property
    def learned(self) -> bool:
        return learned(self)


def learned(r) -> bool:
    """THE definition of a seed that learned, for tables and figures alike: it did not diverge
    and its (reported) training error is below 90% of chance error (81% on MNIST). Seeds that
    did not learn count as run, are left out of the means, and a cell none learned in is `—`."""
    chance = 100 * (1 - 1 / r.classes)
    return r.stop != "diverged" and r.train_error is not None and r.train_error < NO_LEARNING * chance


# --- checking one field ----------------------------------------------------------------------------

class Invalid(ValueError):
    """A missing or wrong field; the message starts with its dotted name."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: {why}")


_REQUIRED = object()


def _take(obj: dict, name: str, ok: Callable[[object], bool], expected: str, default=_REQUIRED):
    """obj[last part of name] when ok(value); the default when it is absent (if one is given);
    Invalid naming the field otherwise."""
    key = name.rsplit(".", 1)[-1]
    if key not in obj:
        if default is _REQUIRED:
            raise Invalid(name, "missing")
        return default
    value = obj[key]
    if not ok(value):
        raise Invalid(name, f"{reprlib.repr(value)}, expected {expected}")
    return value


def _is_int(lo: int, hi: float = math.inf) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _is_line(v) -> bool:  # printed into the tables: a line break would break them
    return _is_text(v) and v.isprintable()


def _is_pct(v) -> bool:  # an error rate in percent; JSON has no NaN, but a hand-edited file might
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 100


def _is_seeds(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(0)(s) for s in v) and len(set(v)) == len(v)


PCT = "a number in [0, 100]"


# --- checking a whole record ---------------------------------------------------------------------

def parse(rec: dict, path: Path) -> Record:
    """The Record of a loaded JSON record (store.load); Invalid naming the first bad field."""
    cfg = _take(rec, "config", lambda v: isinstance(v, dict), "an object")
    part = {name: _take(cfg, f"config.{name}", lambda v: isinstance(v, dict), "an object")
            for name in ("dataset", "model", "method", "reg")}
    names = {k: _take(v, f"config.{k}.name", _is_line, "one line of printable text") for k, v in part.items()}
    classes = _take(part["dataset"], "config.dataset.classes", _is_int(2), "an int >= 2",
                    default=CLASSES.get(names["dataset"]))
    if classes is None:
        raise Invalid("config.dataset.classes", f"missing, and {names['dataset']!r} is not a known data set")
    seeds = _take(cfg, "config.seeds", _is_seeds, "a non-empty list of distinct ints >= 0")
    max_epochs = _take(cfg, "config.max_epochs", _is_int(1), "an int >= 1")
    # a row's own training time (the dropout row's 150 epochs); absent in records made before it
    train_epochs = _take(cfg, "config.train_epochs", lambda v: v is None or _is_int(1)(v), "an int >= 1 or null",
                         default=None)
    seed = _take(rec, "seed", _is_int(0), "an int >= 0")
    if seed not in seeds:
        raise Invalid("seed", f"{seed} is not among config.seeds {reprlib.repr(seeds)}")
    stop = _take(rec, "stop", lambda v: v in STOPS, " or ".join(STOPS))
    limit = epoch_limit({"max_epochs": max_epochs, "train_epochs": train_epochs})
    epochs = _take(rec, "epochs", _is_int(1, limit), f"an int from 1 to the epoch limit ({limit})")
    errors = _final_errors(rec, stop, epochs)
    return Record(
        path=path, dataset=names["dataset"], classes=classes, model=names["model"], method=names["method"],
        reg=names["reg"], row=_take(rec, "row", _is_line, "one line of printable text"),
        # added after this record format: absent means not frozen
        freeze=_take(cfg, "config.freeze_first_epochs", _is_int(0), "an int >= 0", default=0),
        key=_take(rec, "key", _is_text, "a non-empty string"), seed=seed, seeds=tuple(seeds),
        profile=_take(cfg, "config.profile", _is_line, "one line of printable text"), max_epochs=limit,
        epochs=epochs, stop=stop, train_error=errors[0], test_error=errors[1],
        history=_history(rec, epochs), config=cfg,
        device=_take(rec, "device", _is_text, "a non-empty string", default="cpu"),
        threads=_take(rec, "cpu_threads", _is_int(1), "an int >= 1", default=1))


def _final_errors(rec: dict, stop: str, epochs: int) -> tuple[float | None, float | None]:
    """(train, test) error at the reported epoch. A diverged seed has none (null); every other
    seed has both, so a converged seed can never show as `nan`."""
    diverged = stop == "diverged"
    for name in ("train_error", "test_error"):
        if diverged:
            _take(rec, name, lambda v: v is None, "null (the seed diverged)")
        else:
            _take(rec, name, _is_pct, f"{PCT} (stop is {stop!r}; only a diverged seed has no errors)")
    if "best_val" not in rec:
        return rec["train_error"], rec["test_error"]
    # dropout rows: the epoch chosen on the validation set
    if diverged:
        raise Invalid("best_val", "present, but the seed diverged")
    best = _take(rec, "best_val", lambda v: isinstance(v, dict), "an object")
    _take(best, "best_val.epoch", _is_int(1, epochs), f"an int from 1 to epochs ({epochs})")
    _take(best, "best_val.val_error", _is_pct, PCT)
    return (_take(best, "best_val.train_error", _is_pct, PCT), _take(best, "best_val.test_error", _is_pct, PCT))


def _history(rec: dict, epochs: int) -> tuple[dict, ...]:
    """One row per epoch, epochs 1, 2, ... in order, each with its train and test error (the
    figures' curves); a validation error, where there is one, is a percentage too."""
    history = _take(rec, "history", lambda v: isinstance(v, list) and len(v) == epochs,
                    f"a list of {epochs} rows (one per epoch run)")
    for i, row in enumerate(history):
        name = f"history[{i}]"
        if not isinstance(row, dict):
            raise Invalid(name, f"{reprlib.repr(row)}, expected an object")
        _take(row, f"{name}.epoch", lambda v: _is_int(1)(v) and v == i + 1, f"{i + 1}")
        for err in ("train_error", "test_error"):
            _take(row, f"{name}.{err}", _is_pct, PCT)
        _take(row, f"{name}.val_error", _is_pct, PCT, default=None)
    return tuple(history)
