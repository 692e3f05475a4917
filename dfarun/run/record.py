"""THE run record: one seed's numbers, its config and where it ran, as one typed model.

`Record`'s fields are the record file's keys, in the order they are written; each field's
type says what it may hold (`Annotated[..., Rule]`: checked; a default: may be absent, as in
records made before it). The runner builds one per seed (`Record.new`, provenance.record)
and writes `to_dict()` (store.write); `store.finished` and dfarun-tables and -figures read
files back with `read` (= `load` + `parse`). Both ways go through the same checks, so what
passes can be tabulated and plotted without further checks, and what the runner writes
always reads back. run/typed.py checks a value against such a type; what a record's key
hashes is run/experiment.py's. This module imports neither torch nor anything that does. (No
`from __future__ import annotations`: the fields' types are evaluated here, with this module's
names.)
"""
import dataclasses
import json
import math
import reprlib
import typing
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Callable, NamedTuple, TypedDict

from dfarun.config.schema import epoch_limit
from dfarun.engine.hyp import CLASSES  # for records whose config lacks dataset.classes
from dfarun.run.typed import Absent, Invalid, Rule, checker

FORMAT = 2  # bump when the record layout changes (2: row label, best_val)
STOPS = ("converged", "max_epochs", "schedule_end", "diverged")  # the order stop reasons are listed in
NO_LEARNING = 0.9  # a seed has not learned while its train error is >= 90% of chance error


# --- the types of the fields -------------------------------------------------------------------

def _int(v, lo: int = 0, hi: float = math.inf) -> bool:
    return type(v) is int and lo <= v <= hi  # type, not isinstance: True is no int here


def _pct(v) -> bool:  # an error rate in percent; JSON has no NaN, but a hand-edited file might (NaN fails <=)
    return (type(v) is float or type(v) is int) and 0 <= v <= 100


def _text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _line(v) -> bool:  # printed into the tables: a line break would break them
    return _text(v) and v.isprintable()


PCT = "a number in [0, 100]"
Int0 = Annotated[int, Rule(_int, "an int >= 0")]
Int1 = Annotated[int, Rule(lambda v: _int(v, 1), "an int >= 1")]
Pct = Annotated[float, Rule(_pct, PCT)]
MaybePct = Annotated[float | None, Rule(lambda v: v is None or _pct(v), f"{PCT} or null")]
Line = Annotated[str, Rule(_line, "one line of printable text")]
Text = Annotated[str, Rule(_text, "a non-empty string")]
Seeds = Annotated[list, Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(_int(s) for s in v)
                             and len(set(v)) == len(v), "a non-empty list of distinct ints >= 0")]
Stop = Annotated[str, Rule(lambda v: v in STOPS, " or ".join(STOPS))]
Anything = Annotated[object, Rule(lambda v: True, "anything")]


class Named(TypedDict):  # config.model, .method, .reg: the name is what the tables print
    name: Line


class DatasetPart(TypedDict):
    name: Line
    classes: Annotated[int, Rule(lambda v: _int(v, 2), "an int >= 2"), Absent(None)]  # None: by name (CLASSES)


class RunConfig(TypedDict):
    """The parts of the run's config (the whole resolved Config, with the effective lr) that
    the reports use; the rest is kept as it is."""
    dataset: DatasetPart
    model: Named
    method: Named
    reg: Named
    seeds: Seeds
    max_epochs: Int1
    train_epochs: Annotated[int | None, Rule(lambda v: v is None or _int(v, 1), "an int >= 1 or null"), Absent(None)]
    profile: Line
    freeze_first_epochs: Annotated[int, Rule(_int, "an int >= 0"), Absent(0)]


class Epoch(TypedDict):
    """One history row (engine.train.fit); train_loss, seconds, lr and angles are kept as they are."""
    epoch: Int1
    train_error: Pct
    test_error: Pct
    val_error: Annotated[float, Rule(_pct, PCT), Absent(None)]


class BestVal(TypedDict):  # the epoch chosen on the validation set (val=true)
    epoch: Int1
    val_error: Pct
    train_error: Pct
    test_error: Pct


class Result(NamedTuple):
    train_error: float | None
    test_error: float | None


# --- the record ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Record:
    """One seed's run record; the fields in the file's order."""
    format: Annotated[int, Rule(lambda v: v == FORMAT, f"{FORMAT}")] = FORMAT
    key: Text                         # the experiment: a hash of settings(config)
    row: Line                         # the paper's row label, e.g. "2x800 Tanh + DO"
    config: RunConfig
    device: Text = "cpu"              # "cpu", or the GPU's name (the headline's costs)
    stacked_seeds: Anything = None
    cpu_threads: Int1 = 1             # torch's CPU threads in the job
    torch: Anything = None
    python: Anything = None
    dfarun: Anything = None           # dfarun's version, as installed (None: imported uninstalled)
    git_commit: Anything = None
    git_dirty: Anything = None        # uncommitted changes: git_commit alone does not say what ran
    host: Anything = None
    overrides: Anything = None        # the command line's overrides, as typed (None: called from Python)
    seed: Int0
    created_utc: Anything = None
    stop: Stop
    epochs: Int1
    train_error: MaybePct             # at the last epoch; null when the seed diverged
    test_error: MaybePct
    wall_seconds: Anything = None
    best_val: Annotated[BestVal | None, BestVal] = None  # absent, or an object
    history: tuple[Epoch, ...] = field(repr=False)
    path: Path | None = field(default=None, compare=False, metadata={"file": False})  # where it was read

    def __hash__(self) -> int:  # equal records are one experiment's one seed (config is a dict)
        return hash((self.key, self.seed, self.row))

    @classmethod
    def new(cls, **fields) -> "Record":
        """A record built by the runner, checked as a reader checks it (Invalid, TypeError for
        a field the format does not have)."""
        unknown = fields.keys() - set(_FILE_FIELDS)
        if unknown:
            raise TypeError(f"not fields of a record: {', '.join(sorted(unknown))}")
        return parse({k: v for k, v in fields.items() if not (v is None and _DEFAULTS.get(k, ...) is None)})

    def to_dict(self) -> dict:
        """The record file's JSON object (best_val only where there is one)."""
        out = {name: getattr(self, name) for name in _FILE_FIELDS}
        if self.best_val is None:
            del out["best_val"]
        return out | {"history": list(self.history)}

    # what the tables and figures read, derived from the fields
    dataset = property(lambda self: self.config["dataset"]["name"])
    model = property(lambda self: self.config["model"]["name"])
    method = property(lambda self: self.config["method"]["name"])
    reg = property(lambda self: self.config["reg"]["name"])
    profile = property(lambda self: self.config["profile"])
    seeds = property(lambda self: tuple(self.config["seeds"]))  # the seeds the job asked for
    freeze = property(lambda self: self.config.get("freeze_first_epochs", 0))  # epochs the first layer stayed frozen
    threads = property(lambda self: self.cpu_threads)

    @property
    def classes(self) -> int:
        return self.config["dataset"].get("classes") or CLASSES[self.dataset]

    @property
    def max_epochs(self) -> int:
        """The most epochs the seed could run: config.max_epochs, or its row's shorter train_epochs."""
        return epoch_limit(self.config)

    @cached_property
    def result(self) -> Result:
        """(train, test) error at the reported epoch: best_val's when there is one; None if diverged."""
        at = self.best_val if self.best_val is not None else {"train_error": self.train_error,
                                                                "test_error": self.test_error}
        return Result(at["train_error"], at["test_error"])

    @property
    def learned(self) -> bool:
        return learned(self)


def learned(r: Record) -> bool:
    """THE definition of a seed that learned, for tables and figures alike: it did not diverge
    and its (reported) training error is below 90% of chance error (81% on MNIST). Seeds that
    did not learn count as run, are left out of the means, and a cell none learned in is `—`."""
    chance = 100 * (1 - 1 / r.classes)
    train = r.result.train_error
    return r.stop != "diverged" and train is not None and train < NO_LEARNING * chance


# --- checking: each field by its type, then the fields against each other ----------------------------

@cache
def _fields() -> tuple[tuple[str, Callable, bool], ...]:
    """(name, check, required) of each field of the file, in its order."""
    hints = typing.get_type_hints(Record, include_extras=True)
    return tuple((f.name, checker(hints[f.name]), f.default is dataclasses.MISSING)
                 for f in dataclasses.fields(Record) if f.metadata.get("file", True))


_FILE_FIELDS = tuple(f.name for f in dataclasses.fields(Record) if f.metadata.get("file", True))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Record)}  # None: a null is the field left out


def parse(rec: dict, path: Path | None = None) -> Record:
    """The Record of a loaded JSON record (`load`); Invalid naming the first bad field."""
    values = {}
    for name, check, required in _fields():
        if name in rec:
            try:
                values[name] = check(rec[name])
            except Invalid as err:
                raise err.within(name) from None
        elif required:
            raise Invalid(name, "missing")
    r = Record(**values, path=path)
    _agree(r)
    return r


def _agree(r: Record) -> None:
    """The fields against each other: Invalid naming the first that does not fit."""
    if r.config["dataset"].get("classes") is None and r.dataset not in CLASSES:
        raise Invalid("config.dataset.classes", f"missing, and {r.dataset!r} is not a known data set")
    if r.seed not in r.config["seeds"]:
        raise Invalid("seed", f"{r.seed} is not among config.seeds {reprlib.repr(r.config['seeds'])}")
    if r.epochs > r.max_epochs:
        raise Invalid("epochs", f"{r.epochs}, expected an int from 1 to the epoch limit ({r.max_epochs})")
    for name in ("train_error", "test_error"):  # a converged seed can never show as `nan`
        if r.stop == "diverged" and getattr(r, name) is not None:
            raise Invalid(name, f"{getattr(r, name)!r}, expected null (the seed diverged)")
        if r.stop != "diverged" and getattr(r, name) is None:
            raise Invalid(name, f"None, expected {PCT} (stop is {r.stop!r}; only a diverged seed has no errors)")
    if r.best_val is not None:  # dropout rows: the epoch chosen on the validation set
        if r.stop == "diverged":
            raise Invalid("best_val", "present, but the seed diverged")
        if r.best_val["epoch"] > r.epochs:
            raise Invalid("best_val.epoch", f"{r.best_val['epoch']}, expected an int from 1 to epochs ({r.epochs})")
    if len(r.history) != r.epochs:  # one row per epoch run, epochs 1, 2, ... in order (the figures' curves)
        raise Invalid("history", f"{reprlib.repr(list(r.history))}, expected a list of {r.epochs} rows (one per epoch run)")
    for i, row in enumerate(r.history):
        if row["epoch"] != i + 1:
            raise Invalid(f"history[{i}].epoch", f"{row['epoch']!r}, expected {i + 1}")


# --- files -----------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    """The JSON object at path, a record of this format; ValueError saying why it is not one."""
    if path.exists() and not path.is_file():  # a FIFO would block the read; a folder cannot be one
        raise ValueError("not a regular file")
    try:
        rec = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"unreadable ({err.strerror or type(err).__name__})") from None
    except ValueError as err:  # truncated, empty, not UTF-8
        raise ValueError(f"not JSON ({err})") from None
    except RecursionError:  # nested deeper than any record: a foreign or hostile file
        raise ValueError("not JSON (nested too deeply)") from None
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not a record")
    if rec.get("format") != FORMAT:
        raise ValueError(f"format {rec.get('format')!r}; this version reads format {FORMAT}")
    return rec


def read(path: Path) -> Record:
    """The record at path; ValueError (Invalid: naming the field) when it is not a valid one."""
    return parse(load(path), path)

