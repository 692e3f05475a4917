"""`dfarun-tables`: run records -> the paper's Tables 1-3 (mean ± std over seeds), beside the paper.

    dfarun-tables --store runs/ --out results/ [--compare] [--tables 1,2,3]

For each table it writes results/tableN.md, .tex and .csv and prints the Markdown. The
paper's own numbers are data (paper_results.csv, transcribed from paper.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import reprlib
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from . import store

log = logging.getLogger("dfarun")

TABLES = {1: ("mnist", "MNIST"), 2: ("cifar10", "CIFAR-10"), 3: ("cifar100", "CIFAR-100")}
METHODS = ["bp", "fa", "dfa"]
BRACKET_ABOVE = {"mnist": 0.01, "cifar10": 0.1, "cifar100": 0.1}  # % train error the paper brackets
CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}
DECIMALS = {"mnist": 2, "cifar10": 1, "cifar100": 1}  # as the paper prints its test errors
NO_LEARNING = 0.9  # a seed "did not converge" when its train error is >= 90% of chance error
DASH = "—"


# --- inputs ------------------------------------------------------------------------------------

def paper_results() -> pd.DataFrame:
    with resources.files("dfarun").joinpath("paper_results.csv").open() as f:
        return pd.read_csv(f)


def load_records(root: Path) -> pd.DataFrame:
    """One row per finished record in `root`. Anything else (broken or truncated JSON, another
    program's JSON, an older record format, fields of the wrong type, a second record of the same
    (experiment, seed)) is skipped with one warning line and not counted. Temp files of writes
    in progress are not *.json and are never read."""
    rows, seen = [], {}
    for path in sorted(Path(root).glob("*.json")):
        try:
            row = _row(store.load(path))
        except ValueError as err:
            print(f"warning: skipping {path}: {err}", file=sys.stderr)
            continue
        ident = tuple(row[k] for k in ("dataset", "row", "method", "key", "seed"))
        if ident in seen:  # a copied file: the same seed must not count twice
            print(f"warning: skipping {path}: a second record of key {row['key']} seed {row['seed']} "
                  f"(first: {seen[ident].name})", file=sys.stderr)
            continue
        seen[ident] = path
        rows.append(row)
    columns = ["dataset", "row", "method", "key", "seed", "profile", "seeds_asked", "max_epochs",
               "epochs", "stop", "train_error", "test_error"]
    return pd.DataFrame(rows, columns=columns)


def _row(rec: dict) -> dict:
    """The table's fields of a record; ValueError naming the first missing or mistyped one."""
    cfg = _field(rec, "config", dict)
    chosen = _field(rec, "best_val", dict, optional=True) or rec  # dropout rows: the epoch chosen on validation
    seeds = _field(cfg, "seeds", list)
    return {
        "dataset": _field(_field(cfg, "dataset", dict), "name", str), "row": _field(rec, "row", str),
        "method": _field(_field(cfg, "method", dict), "name", str),
        "key": _field(rec, "key", str), "seed": _field(rec, "seed", int),
        "profile": _field(cfg, "profile", str, optional=True) or "default",
        "seeds_asked": len(seeds), "max_epochs": _field(cfg, "max_epochs", int),
        "epochs": _field(rec, "epochs", int), "stop": _field(rec, "stop", str),
        "train_error": _field(chosen, "train_error", float, optional=True),
        "test_error": _field(chosen, "test_error", float, optional=True)}


def _field(obj: dict, key: str, kind: type, optional: bool = False):
    """obj[key] if it is a `kind` (None allowed when optional; an int is a float; a bool is
    neither); ValueError otherwise."""
    value = obj.get(key)
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if kind is float and ok:
        ok = math.isfinite(value)
    if not ok:
        raise ValueError(f"not a dfarun record: {key}={reprlib.repr(value)}, expected {'null or ' * optional}{kind.__name__}")
    return value


# --- aggregation -------------------------------------------------------------------------------

def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, row, method): mean ± std over the seeds that learned.

    Where several experiments (keys) fill one cell, the one with the largest epoch budget,
    then the most seeds, is used."""
    if records.empty:
        return pd.DataFrame(columns=["dataset", "row", "method"])
    records = records.assign(
        learned=lambda r: (r.stop != "diverged") & r.train_error.notna()
        & (r.train_error < NO_LEARNING * 100 * (1 - 1 / r.dataset.map(CLASSES).fillna(10))))
    cell = ["dataset", "row", "method"]
    ranked = records.assign(n_key=records.groupby("key").seed.transform("size")).sort_values(
        ["max_epochs", "n_key", "key"], ascending=[False, False, True])
    records = records.join(ranked.groupby(cell).key.first().rename("best"), on=cell).query("key == best")
    ok = records[records.learned]
    cells = records.groupby(cell).agg(
        n=("seed", "size"), seeds_asked=("seeds_asked", "max"), profile=("profile", "first"),
        max_epochs=("max_epochs", "first"), epochs_mean=("epochs", "mean"),
        diverged=("stop", lambda s: int((s == "diverged").sum())))
    stats = ok.groupby(cell).agg(
        n_learned=("seed", "size"), test_mean=("test_error", "mean"), test_std=("test_error", "std"),
        train_mean=("train_error", "mean"))
    cells = cells.join(stats).reset_index()
    cells["n_learned"] = cells.n_learned.fillna(0).astype(int)
    cells["test_std"] = cells.test_std.fillna(0.0)  # one seed: no spread
    return cells


def _cell(c: pd.Series | None, dataset: str, row: str) -> str:
    if c is None:
        return "not run"
    if c.n_learned == 0:
        return DASH
    d = DECIMALS[dataset]
    text = f"{c.test_mean:.{d}f} ± {c.test_std:.{d}f}%"
    if c.train_mean > BRACKET_ABOVE[dataset]:
        text += f" ({c.train_mean:.2f}%)"
    if c.n_learned < c.seeds_asked:
        text += f" n={c.n_learned}"
    return text


def _paper_cell(p: pd.Series) -> str:
    if p.status == "no_convergence":
        return DASH
    if p.status == "unknown":
        return "?"
    d = DECIMALS[p.dataset]
    text = f"{p.test_mean:.{d}f} ± {p.test_std:.{d}f}%"
    return text + (f" ({p.train_error:.2f}%)" if pd.notna(p.train_error) else "")


def build(table: int, cells: pd.DataFrame, compare: bool) -> tuple[pd.DataFrame, list[str]]:
    """The table as the paper lays it out (rows x BP/FA/DFA) and the notes printed under it."""
    dataset, _ = TABLES[table]
    paper = paper_results().query("table == @table")
    ours = {(c.row, c.method): c for _, c in cells[cells.dataset == dataset].iterrows()} if len(cells) else {}
    lines, within, compared = [], 0, 0
    for row in dict.fromkeys(paper.row):  # the paper's row order
        line = {"Model": row}
        for method in METHODS:
            c = ours.get((row, method))
            text = _cell(c, dataset, row)
            if compare:
                p = paper[(paper.row == row) & (paper.method == method)].iloc[0]
                text = f"{text} / {_paper_cell(p)}"
                if c is not None and c.n_learned and p.status == "value":
                    z = (c.test_mean - p.test_mean) / p.test_std
                    text += f" ({z:+.1f}σ)"
                    compared += 1
                    within += abs(z) <= 2
            line[method.upper()] = text
        lines.append(line)
    notes = _provenance(cells[cells.dataset == dataset] if len(cells) else cells)
    if compare:
        notes.append(f"{within} of {compared} cells within 2 paper std of the paper's mean "
                     f"(cells read: ours / paper (difference in paper std)).")
    return pd.DataFrame(lines), notes


def _provenance(cells: pd.DataFrame) -> list[str]:
    if cells.empty:
        return ["No records for this table yet."]
    notes = []
    for (profile, epochs), g in cells.groupby(["profile", "max_epochs"]):
        seeds = sorted(set(g.seeds_asked))
        rows = sorted(set(g.row))
        notes.append(f"Profile {profile}: {'/'.join(map(str, seeds))} seeds, at most {epochs} epoch{'s' * (epochs != 1)} "
                     f"({len(g)} cells: {', '.join(rows)}).")
    diverged = cells[cells.diverged > 0]
    for c in diverged.itertuples():
        notes.append(f"{c.row} {c.method.upper()}: {c.diverged} of {c.n} seeds diverged.")
    return notes


# --- output ----------------------------------------------------------------------------------

def render(table: int, frame: pd.DataFrame, notes: list[str], compare: bool) -> dict[str, str]:
    _, name = TABLES[table]
    title = f"Table {table}: {name} test error, mean ± std over seeds" + (" (ours / paper)" if compare else "")
    legend = (f"Training error in brackets when above {BRACKET_ABOVE[TABLES[table][0]]}%; "
              f"{DASH} where no seed converged; n= where fewer seeds than asked for learned.")
    footer = [legend, *notes, f"Generated {dt.date.today().isoformat()} by dfarun-tables."]
    md = "\n".join([f"### {title}", "", tabulate(frame, headers="keys", tablefmt="github", showindex=False),
                    "", *[f"- {n}" for n in footer], ""])
    tex = tabulate(frame.map(_latex), headers="keys", tablefmt="latex_raw", showindex=False)
    tex = f"% {title}\n" + "".join(f"% {n}\n" for n in footer) + tex + "\n"
    return {"md": md, "tex": tex, "csv": frame.to_csv(index=False)}


def _latex(text: str) -> str:
    for plain, tex in (("%", r"\%"), ("±", r"$\pm$"), ("σ", r"$\sigma$"), (DASH, "---")):
        text = text.replace(plain, tex)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dfarun-tables", description=__doc__.splitlines()[0])
    p.add_argument("--store", default="runs", help="directory of run records (default: runs)")
    p.add_argument("--out", default="results", help="where tableN.md/.tex/.csv go (default: results)")
    p.add_argument("--tables", default="1,2,3", help="which tables, comma-separated (default: 1,2,3)")
    p.add_argument("--compare", action="store_true", help="show the paper's numbers and the difference")
    args = p.parse_args(argv)
    try:
        tables = [int(t) for t in args.tables.split(",")]
        assert all(t in TABLES for t in tables)
    except (ValueError, AssertionError):
        print(f"dfarun-tables: error: --tables={args.tables!r}: expected numbers from 1, 2, 3", file=sys.stderr)
        return 2
    if not Path(args.store).is_dir():
        print(f"dfarun-tables: error: --store={args.store!r}: no such directory", file=sys.stderr)
        return 2
    cells = aggregate(load_records(Path(args.store)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for table in tables:
        frame, notes = build(table, cells, args.compare)
        texts = render(table, frame, notes, args.compare)
        for ext, text in texts.items():
            (out / f"table{table}.{ext}").write_text(text)
        print(texts["md"])
    return 0


def cli() -> None:
    sys.exit(main())
