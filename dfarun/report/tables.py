"""`dfarun-tables`: run records -> the paper's Tables 1-3 beside the paper, or any store by the settings named.

    dfarun-tables --store runs/ [--out runs/tables/] [--compare] [--tables 1,2,3] [--readme README.md]
    dfarun-tables --store runs/ --by KEYS [--where KEY=VALUE]      (groups.py: any store)

For each table with records it writes <out>/tableN.md and .tex (for people: the table, then
per cell the seeds, epochs and stop reasons) and .csv (for machines: the numbers, one line per
cell), and prints the Markdown; with Table 1 and --compare, also <out>/headline.md
(headline.py), and with --readme, that headline into each README named. The paper's own
numbers are data (paper_results.csv, transcribed from the paper). Which records count, which
seeds learned and which experiment fills a cell are decided in records.py, shared with
dfarun-figures; how a cell is written (n=1, demo) in text.py.
"""
from __future__ import annotations

import argparse
import errno
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from dfarun import atomic
from dfarun.report import cells as protocol
from dfarun.report import groups, headline, records
from dfarun.report.text import DASH, error_text, files, generated, legend_extras, stop_words

TABLES = {1: ("mnist", "MNIST"), 2: ("cifar10", "CIFAR-10"), 3: ("cifar100", "CIFAR-100")}
BRACKET_ABOVE = {"mnist": 0.01, "cifar10": 0.1, "cifar100": 0.1}  # % train error the paper brackets
DECIMALS = {"mnist": 2, "cifar10": 1, "cifar100": 1}  # as the paper prints its test errors
SUMMARY = ["seeds_learned", "seeds_run", "seeds_asked", "test_mean", "test_std", "train_mean",
           "epochs_mean", "max_epochs", "profile", "stop"]
# results/tableN.csv, one line per cell of the paper's table, in its order
CSV = ["row", "method", "test_mean", "test_std", "train_mean", "seeds_learned", "seeds_run", "seeds_asked",
       "epochs_mean", "max_epochs", "profile", "stop", "paper_status", "paper_test_mean", "paper_test_std",
       "paper_train_error", "distance_paper_std"]


# --- inputs ------------------------------------------------------------------------------------

def paper_results() -> pd.DataFrame:
    with resources.files("dfarun.report").joinpath("paper_results.csv").open() as f:
        return pd.read_csv(f)


def load_records(root: Path) -> pd.DataFrame:
    """One row per valid record in `root` (records.read: anything else is skipped with one
    warning line and not counted); records.frame's columns."""
    return records.frame(records.read([Path(root)]))


def aggregate(recs) -> pd.DataFrame:
    """One row per (dataset, row, method) with records and the first layer not frozen: the
    summary (records.summary) of the experiment that fills it (records.fill). `recs`: Records,
    or a records.frame of them."""
    if isinstance(recs, pd.DataFrame):
        recs = list(recs.record)
    filled = records.cells(recs)
    rows = [{"dataset": d, "row": row, "method": m, **records.summary(rs)}
            for (d, row, m, frozen), rs in sorted(filled.items()) if not frozen]
    return pd.DataFrame(rows, columns=["dataset", "row", "method", *SUMMARY, "demo"])


# --- one table ---------------------------------------------------------------------------------

def numbers(table: int, cells: pd.DataFrame) -> pd.DataFrame:
    """The table's CSV: every cell of the paper's table (rows x BP/FA/DFA, in its order) with our
    numbers (blank where not run), the paper's, and our distance from the paper in paper std
    (none for a demo cell: text.py); then the cells of rules the paper did not run (a new rule
    in rules.py), where they have records, with paper_status `none`. Its last column, `demo`,
    is not written to the CSV (whose columns stay those of CSV)."""
    dataset, _ = TABLES[table]
    ours = {(c.row, c.method): c for c in cells[cells.dataset == dataset].itertuples()}
    paper = paper_results().query("table == @table")
    extra = sorted(key for key in ours if key[0] in set(paper.row) and key[1] not in set(paper.method))
    not_in_paper = [{"row": row, "method": method, "status": "none"} for row, method in extra]
    lines = []
    for p in paper.to_dict("records") + not_in_paper:
        c = ours.get((p["row"], p["method"]))
        line = {"row": p["row"], "method": p["method"], "seeds_learned": 0, "seeds_run": 0, "seeds_asked": 0,
                **({k: getattr(c, k) for k in SUMMARY} if c is not None else {}),
                "paper_status": p["status"], "paper_test_mean": p.get("test_mean"),
                "paper_test_std": p.get("test_std"), "paper_train_error": p.get("train_error"),
                "demo": c is not None and c.demo}
        if c is not None and c.seeds_learned and not c.demo and p["status"] == "value":
            line["distance_paper_std"] = (c.test_mean - p["test_mean"]) / p["test_std"]
        lines.append(line)
    return pd.DataFrame(lines, columns=[*CSV, "demo"])


@dataclass
class Table:
    numbers: pd.DataFrame  # the CSV
    frame: pd.DataFrame    # Model x BP/FA/DFA (and other rules run): mean ± std (and the paper's, with --compare)
    details: pd.DataFrame  # the same cells: seeds, mean epochs, stop reasons
    notes: list[str]


def build(table: int, cells: pd.DataFrame, compare: bool) -> Table:
    """The table as the paper lays it out, its details table and the notes printed under it."""
    dataset, _ = TABLES[table]
    nums = numbers(table, cells)
    frame, details = [], []
    for row, g in nums.groupby("row", sort=False):
        frame.append({"Model": row})
        details.append({"Model": row})
        for n in g.itertuples():
            text = _cell(n, dataset)
            if compare:
                text = f"{text} / {_paper_cell(n, dataset)}"
                if pd.notna(n.distance_paper_std):
                    text += f" ({headline.sigma(n.distance_paper_std)}σ)"
            frame[-1][n.method.upper()] = text
            details[-1][n.method.upper()] = _details(n)
    notes = _provenance(nums)
    if compare:
        z = nums.distance_paper_std.dropna()
        notes.append(f"{int((z.abs() <= 2).sum())} of {len(z)} cells within 2 paper std of the paper's mean "
                     f"(cells read: ours / paper (difference in paper std)).")
        if demos := int(nums.demo.sum()):
            notes.append(f"{demos} demo cell{'s' * (demos != 1)} not compared with the paper.")
    # a rule the paper did not run has a column of its own, blank on rows it has no records of
    return Table(nums, pd.DataFrame(frame).fillna(""), pd.DataFrame(details).fillna(""), notes)


def _cell(n, dataset: str) -> str:
    if n.seeds_run == 0:
        return "not run"
    return error_text(n, DECIMALS[dataset], BRACKET_ABOVE[dataset])


def _paper_cell(n, dataset: str) -> str:
    if n.paper_status == "none":
        return "not in the paper"
    if n.paper_status == "no_convergence":
        return DASH
    if n.paper_status == "unknown":
        return "?"
    d = DECIMALS[dataset]
    text = f"{n.paper_test_mean:.{d}f} ± {n.paper_test_std:.{d}f}%"
    return text + (f" ({n.paper_train_error:.2f}%)" if pd.notna(n.paper_train_error) else "")


def _details(n) -> str:
    """Seeds learned / asked, mean epochs run, stop reasons: "3/3 learned, 85 ep, converged ×3"."""
    if n.seeds_run == 0:
        return ""
    return f"{n.seeds_learned}/{n.seeds_asked} learned, {n.epochs_mean:.0f} ep, {stop_words(n.stop)}"


def _provenance(nums: pd.DataFrame) -> list[str]:
    ran = nums[nums.seeds_run > 0]
    if ran.empty:
        return ["No records for this table yet."]
    notes = []
    for (profile, epochs), g in ran.groupby(["profile", "max_epochs"]):
        seeds = sorted(set(g.seeds_asked))
        rows = ", ".join(dict.fromkeys(g.row))
        notes.append(f"Profile {profile}: {'/'.join(map(str, seeds))} seeds, at most {int(epochs)} "
                     f"epoch{'s' * (epochs != 1)} ({len(g)} cells: {rows}).")
    return notes


# --- output ----------------------------------------------------------------------------------

def render(table: int, t: Table, compare: bool) -> dict[str, str]:
    dataset, name = TABLES[table]
    title = f"Table {table}: {name} test error, mean ± std over seeds" + (" (ours / paper)" if compare else "")
    legend = (f"Training error in brackets when above {BRACKET_ABOVE[dataset]}%; {DASH} where no seed "
              f"learned (diverged, or training error at least 90% of chance); n= where fewer seeds than "
              f"asked for learned.")
    detail_title = ("Per cell: seeds learned / asked, mean epochs run, stop reasons (seeds per reason: "
                    "converged, max_epochs, schedule_end, diverged).")
    extras = legend_extras(t.numbers[t.numbers.seeds_run > 0].itertuples())
    legend += "".join(f" {extra}." for extra in extras)
    footer = [legend, *t.notes, generated()]
    return files(title, [t.frame, detail_title, t.details], footer, t.numbers[CSV])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dfarun-tables", description=__doc__.splitlines()[0])
    p.add_argument("--store", default="runs", help="directory of run records (default: runs)")
    p.add_argument("--out", default=None, help="where the .md/.tex/.csv files go (default: <store>/tables)")
    p.add_argument("--tables", default=None, help="which tables, comma-separated (default: 1,2,3)")
    p.add_argument("--compare", action="store_true", help="show the paper's numbers and the difference")
    p.add_argument("--readme", action="append", default=[], metavar="FILE",
                   help="with Table 1 and --compare: also write the headline into FILE, between its "
                        "headline:begin and headline:end markers (repeatable)")
    p.add_argument("--by", default=None, metavar="KEYS",
                   help="instead of the paper's tables: every record in the store, one row per group of these "
                        "settings (dotted config keys, comma-separated, e.g. method.name,lr); writes by_<KEYS>.*")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="with --by: only records with this setting (repeatable: all must hold)")
    args = p.parse_args(argv)
    args.out = args.out or str(Path(args.store) / "tables")  # a store's tables beside it, not over results/
    if args.by is None and args.where:
        return _error("--where: only with --by")
    if args.by is not None and (bad := next((f"--{o}" for o in ("tables", "compare", "readme")
                                             if getattr(args, o) not in (None, False, [])), None)):
        return _error(f"{bad}: not with --by (the paper's tables are its own view; --by summarises any store)")
    try:
        tables = [int(t) for t in (args.tables or "1,2,3").split(",")]
    except ValueError:
        tables = []
    if not tables or not all(t in TABLES for t in tables):
        return _error(f"--tables={args.tables!r}: expected numbers from 1, 2, 3")
    if args.readme and not (1 in tables and args.compare):
        return _error("--readme: needs Table 1 in --tables and --compare (it writes Table 1's headline)")
    if not Path(args.store).is_dir():
        return _error(f"--store={args.store!r}: no such directory")
    if args.by is not None:
        try:
            return _write(args, *groups.render(records.read([Path(args.store)]), args.by, args.where, generated()))
        except groups.Refused as why:
            return _error(str(why))
    return _paper(args, tables)


def _paper(args, tables: list[int]) -> int:
    """The paper's tables: the records that may fill their cells (cells.split), laid out as the paper's."""
    recs, off = protocol.split(records.read([Path(args.store)]))
    for note in protocol.notes({cell: why for cell, why in off.items() if protocol.table_cell(*cell) is not None}):
        print(f"dfarun-tables: note: {note}", file=sys.stderr)
    # a wrong --store (empty, or only other runs) must not overwrite the tables with "not run"
    if not any(r.dataset == TABLES[t][0] and protocol.table_cell(r.dataset, r.row, r.method) is not None
               for r in recs for t in tables):
        return _error(f"--store={args.store!r}: no run records of table {','.join(map(str, tables))}'s cells there "
                      f"(--by KEYS summarises any store)")
    cells = aggregate(recs)
    texts, shown = {}, []
    for table in tables:
        built = build(table, cells, args.compare)
        if not (built.numbers.seeds_run > 0).any():  # not a table of "not run" cells
            print(f"dfarun-tables: note: table {table} ({TABLES[table][1]}): no records of its cells: "
                  f"not written", file=sys.stderr)
            continue
        texts |= {f"table{table}.{ext}": text for ext, text in render(table, built, args.compare).items()}
        if table == 1 and args.compare:  # the README's results part (headline.py)
            texts["headline.md"] = headline.render(built.numbers, recs)
        shown.append(texts[f"table{table}.md"])
    if args.readme and "headline.md" not in texts:
        return _error("--readme: table 1 has no records of its cells in this store: no headline to write")
    return _write(args, texts, "\n".join(shown))


def _write(args, texts: dict[str, str], shown: str) -> int:
    """Write `texts` (file name -> text) into --out and the headline into each --readme, then
    print `shown` and the paths written (as dfarun-figures does): every file complete or none
    written (the names are checked first, each is written atomically)."""
    readmes, outputs = {}, {(Path(args.out) / name).resolve() for name in texts}
    for name in args.readme:  # all read and checked before any file is written
        try:
            path, text, mode = headline.readme(name, texts["headline.md"], outputs)
        except (OSError, RuntimeError, UnicodeDecodeError, ValueError) as err:  # RuntimeError: a symlink loop
            why = "expected UTF-8 text" if isinstance(err, UnicodeDecodeError) else getattr(err, "strerror", None) or err
            return _error(f"--readme={name!r}: {why}")
        readmes[path] = (text, mode)
    out = Path(args.out)
    try:
        if blocked := next((out / name for name in texts if (out / name).is_dir()), None):
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(blocked))
        for name, text in texts.items():
            atomic.write_text(out / name, text)
        for path, (text, mode) in readmes.items():
            atomic.write(path, lambda f, text=text: f.write(text.encode()), binary=True, mode=mode)
    except OSError as err:
        return _error(f"cannot write {err.filename or out} ({err.strerror or err})")
    print(shown)
    print("tables: " + ", ".join(str(path) for path in [*(out / name for name in texts), *readmes]))
    return 0


def _error(message: str) -> int:
    print(f"dfarun-tables: error: {message}", file=sys.stderr)
    return 2


def cli() -> None:
    sys.exit(main())
