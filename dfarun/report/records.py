"""Run records as `dfarun-tables` and `dfarun-figures` read them: one strict reader (each
record checked by run.record, the record format), one rule for which experiment fills a cell,
and one summary of a group of seeds, for the paper's cells and `--by` groups alike.

A record that is not a finished record of this version, or whose fields either tool uses are
missing, of the wrong type or out of range, is skipped with one warning line naming the file
and the field. Whatever passes here can be tabulated and plotted without further checks.
"""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd

from dfarun.config.schema import Config, epoch_limit
from dfarun.run import record
from dfarun.run.record import STOPS, Record


# --- reading stores -------------------------------------------------------------------------------

def read(roots: Iterable[Path]) -> list[Record]:
    """Every finished, valid record in the stores `roots`, in file-name order. The rest (broken or
    truncated JSON, another program's JSON, an older format, a bad field, a second file of the same
    (experiment, seed) — a copy) is skipped with one `warning: skipping <file>: <why>` line each
    on stderr. Temp files of writes in progress are not *.json and are never read."""
    out, seen = [], {}
    for root in roots:
        for path in sorted(Path(root).glob("*.json")):
            try:
                rec = record.read(path)
            except ValueError as err:  # record.load's and record.parse's reasons alike
                _warn(path, str(err))
                continue
            ident = (rec.dataset, rec.row, rec.method, rec.key, rec.seed)
            if ident in seen:  # a copied file: the same seed must not count twice
                _warn(path, f"a second record of key {rec.key} seed {rec.seed} (first: {seen[ident].name})")
                continue
            seen[ident] = path
            out.append(rec)
    return out


def _warn(path: Path, why: str) -> None:
    print(f"warning: skipping {path}: {why}", file=sys.stderr)


FRAME = ["dataset", "row", "method", "freeze", "key", "seed", "seeds", "profile", "max_epochs", "epochs",
         "stop", "train_error", "test_error", "classes", "learned", "short", "model", "reg", "record"]


def frame(records: list[Record]) -> pd.DataFrame:
    """One row per record: its scalar fields (train_error and test_error at the reported epoch,
    Record.result), and the Record itself (`record`: what summaries are made of)."""
    rows = [{k: getattr(r, k) for k in FRAME[:-1] if k not in ("train_error", "test_error", "short")}
            | r.result._asdict() | {"short": short(r), "record": r} for r in records]
    return pd.DataFrame(rows, columns=FRAME)


# --- the protocol's budget ------------------------------------------------------------------------

PROTOCOL_EPOCHS = Config.max_epochs  # the paper's cap (300): the schema's default


def cap(r: Record) -> int:
    """The epochs the protocol trains a seed of this record's settings for at most: the
    paper's 300, or its row's own training time (train_epochs: the dropout row's 150)."""
    return epoch_limit({"max_epochs": PROTOCOL_EPOCHS, "train_epochs": r.config.get("train_epochs")})


def short(r: Record) -> bool:
    """THE definition of a seed that stopped short of the protocol: its epoch budget ran out
    (stop max_epochs: not converged) and was below the protocol's cap (a quick or smoke run).
    A cell with such a seed is a demo (text.error_text) and is not compared with the paper."""
    return r.stop == "max_epochs" and r.max_epochs < cap(r)


# --- cells: which experiment fills one, and what it says -----------------------------------------

def cell(r: Record) -> tuple[str, str, str, bool]:
    """The cell a record belongs to: (data set, paper row, method, first layer frozen?). The
    tables show the unfrozen cells; Figure 2 (left) is the frozen one."""
    return r.dataset, r.row, r.method, r.freeze > 0


def fill(records: Iterable[Record]) -> list[Record]:
    """THE experiment that fills one cell, for tables and figures alike: of the experiments
    (keys) among `records`, the one with the largest epoch limit, then the longest frozen phase
    (Figure 2 left), then the most seeds run, then the first key in sort order (so that the
    choice never depends on file order). Its records, by seed."""
    by_key: dict[str, list] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r)
    best = min(by_key.values(), key=lambda rs: (-rs[0].max_epochs, -rs[0].freeze, -len(rs), rs[0].key))
    return sorted(best, key=lambda r: r.seed)


def cells(records: Iterable[Record]) -> dict[tuple, list[Record]]:
    """Every cell among `records` with the records of the experiment that fills it."""
    grouped: dict[tuple, list] = {}
    for r in records:
        grouped.setdefault(cell(r), []).append(r)
    return {c: fill(rs) for c, rs in grouped.items()}


def summary(rs: list[Record]) -> dict:
    """The numbers of a group of seeds (a paper cell: the records `fill` chose; a `--by`
    group: all of its records): mean ± std (ddof 1) of the test error and the mean training
    error over the seeds that learned (None when none did; the std None unless two did),
    seeds learned / run / asked (the union of the jobs' seed lists), the mean epochs run over
    every seed run, the largest epoch limit, how many seeds stopped for each reason, and
    whether it is a demo (a seed stopped short of the protocol)."""
    ok = [r for r in rs if r.learned]
    tests = [r.result.test_error for r in ok]
    return {"seeds_learned": len(ok), "seeds_run": len(rs),
            "seeds_asked": len(set().union(*(r.seeds for r in rs))),
            "test_mean": statistics.fmean(tests) if ok else None,
            "test_std": statistics.stdev(tests) if len(ok) > 1 else None,
            "train_mean": statistics.fmean(r.result.train_error for r in ok) if ok else None,
            "epochs_mean": statistics.fmean(r.epochs for r in rs), "max_epochs": max(r.max_epochs for r in rs),
            "profile": rs[0].profile, "stop": stop_text(r.stop for r in rs), "demo": any(short(r) for r in rs)}


def stop_text(stops: Iterable[str]) -> str:
    """Counts per stop reason, e.g. "converged:2 max_epochs:1"."""
    counts = Counter(stops)
    return " ".join(f"{s}:{counts[s]}" for s in sorted(counts, key=STOPS.index))
