"""Run records as `dfarun-tables` and `dfarun-figures` read them: one strict reader (each
record checked by run.record.parse), one rule for which experiment fills a cell.

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

from dfarun.run import store
from dfarun.run.record import STOPS, Record, parse


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
                rec = parse(store.load(path), path)
            except ValueError as err:  # store.load's and parse's reasons alike
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
         "stop", "train_error", "test_error", "classes", "learned", "model", "reg"]


def frame(records: list[Record]) -> pd.DataFrame:
    """One row per record, its scalar fields (no history or config)."""
    return pd.DataFrame([{k: getattr(r, k) for k in FRAME} for r in records], columns=FRAME)


# --- cells: which experiment fills one, and what it says -----------------------------------------

def cell(r) -> tuple[str, str, str, bool]:
    """The cell a record belongs to: (data set, paper row, method, first layer frozen?). The
    tables show the unfrozen cells; Figure 2 (left) is the frozen one."""
    return r.dataset, r.row, r.method, r.freeze > 0


def fill(records: Iterable) -> list:
    """THE experiment that fills one cell, for tables and figures alike: of the experiments
    (keys) among `records`, the one with the largest epoch limit, then the longest frozen phase
    (Figure 2 left), then the most seeds run, then the first key in sort order (so that the
    choice never depends on file order). Its records, by seed."""
    by_key: dict[str, list] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r)
    best = min(by_key.values(), key=lambda rs: (-rs[0].max_epochs, -rs[0].freeze, -len(rs), rs[0].key))
    return sorted(best, key=lambda r: r.seed)


def cells(records: Iterable) -> dict[tuple, list]:
    """Every cell among `records` with the records of the experiment that fills it. Takes
    Records, or rows of `frame` (itertuples): both carry the fields used here."""
    grouped: dict[tuple, list] = {}
    for r in records:
        grouped.setdefault(cell(r), []).append(r)
    return {c: fill(rs) for c, rs in grouped.items()}


def summary(rs: list) -> dict:
    """The numbers of one cell (the records `fill` chose): mean ± std (ddof 1; 0 for one seed) of
    the test error and the mean training error over the seeds that learned (None when none
    did), seeds learned / run / asked (the union of the jobs' seed lists), the mean epochs run
    over every seed run, and how many seeds stopped for each reason."""
    ok = [r for r in rs if r.learned]
    tests = [r.test_error for r in ok]
    return {"seeds_learned": len(ok), "seeds_run": len(rs),
            "seeds_asked": len(set().union(*(r.seeds for r in rs))),
            "test_mean": statistics.fmean(tests) if ok else None,
            "test_std": (statistics.stdev(tests) if len(ok) > 1 else 0.0) if ok else None,
            "train_mean": statistics.fmean(r.train_error for r in ok) if ok else None,
            "epochs_mean": statistics.fmean(r.epochs for r in rs), "max_epochs": rs[0].max_epochs,
            "profile": rs[0].profile, "stop": stop_text(r.stop for r in rs)}


def stop_text(stops: Iterable[str]) -> str:
    """Counts per stop reason, e.g. "converged:2 max_epochs:1"."""
    counts = Counter(stops)
    return " ".join(f"{s}:{counts[s]}" for s in sorted(counts, key=STOPS.index))
