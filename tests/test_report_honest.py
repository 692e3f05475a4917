"""Honest cells: a run that stopped short of the protocol is a demo and is not compared with
the paper; one seed has no std; a table without records is not printed."""
from __future__ import annotations

import pandas as pd
import pytest

from dfarun.report import records, tables
from dfarun.run import store

from helpers import record


def tables_main(tmp_path, *recs, args=("--tables", "1", "--compare")):
    runs = tmp_path / "runs"
    for i, rec in enumerate(recs):
        store.write(runs / f"r{i}.json", rec)
    code = tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), *args])
    return code, tmp_path / "out"


def test_a_two_epoch_smoke_run_is_a_demo_with_no_distance_and_one_seed_shows_n1(tmp_path, capsys):
    """The issue's case: 2 epochs of 1x800 BP were compared as "8.13 ± 0.00% / 1.59 ± 0.04% (+163.5σ)"."""
    smoke = record(row="1x800 Tanh", method="bp", seed=0, seeds=(0,), test=8.13, train=7.9, max_epochs=2,
                   stop="max_epochs", profile="default")
    code, out = tables_main(tmp_path, smoke)
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 8.13% (7.90%) n=1 demo / 1.59 ± 0.04% " in printed and "σ" not in printed.split("\n\n")[1]
    assert "± 0.00" not in printed
    assert "0 of 0 cells within 2 paper std" in printed and "1 demo cell not compared with the paper." in printed
    assert "n=1: one seed learned, so no std." in printed and "demo: a seed stopped at a shorter epoch budget" in printed
    csv = pd.read_csv(out / "table1.csv").set_index(["row", "method"]).loc[("1x800 Tanh", "bp")]
    assert list(pd.read_csv(out / "table1.csv").columns) == tables.CSV   # the CSV's columns stay as they were
    assert csv.test_mean == 8.13 and pd.isna(csv.test_std) and pd.isna(csv.distance_paper_std)
    head = (out / "headline.md").read_text()
    assert "| 1x800 Tanh | BP | 8.13% n=1 demo | 1.59 ± 0.04% |  | 1 |" in head
    assert "**0 of 0 cells lie within 2 paper std of the paper.** 1 demo cell (stopped short" in head


@pytest.mark.parametrize("stop, max_epochs, epochs, train_epochs, demo", [
    ("max_epochs", 20, 20, None, True),        # profile=quick: its budget ran out
    ("max_epochs", 300, 300, None, False),     # the protocol's own cap
    ("converged", 20, 12, None, False),        # converged within a short budget: a result
    ("schedule_end", 20, 15, None, False),     # the auto schedule ended it: the protocol's stop
    ("max_epochs", 300, 150, 150, False),      # the dropout row trains 150 epochs (train_epochs)
    ("max_epochs", 100, 100, 150, True),       # ... and a shorter budget than that is short
])
def test_short_is_a_budget_that_ran_out_below_the_protocols_cap(stop, max_epochs, epochs, train_epochs, demo):
    from dfarun.run.record import parse

    rec = record(stop=stop, max_epochs=max_epochs, epochs=epochs)
    rec["config"]["train_epochs"] = train_epochs
    r = parse(rec)
    assert records.short(r) is demo and records.summary([r])["demo"] is demo


def test_a_diverged_seed_is_no_demo_and_a_cell_none_learned_in_is_a_dash(tmp_path, capsys):
    recs = [record(row="1x800 Tanh", method="fa", seed=s, stop="diverged", train=None, test=None, max_epochs=300)
            for s in range(3)]
    code, _ = tables_main(tmp_path, *recs)
    assert code == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1x800 Tanh"))
    assert "| —" in row and "demo" not in row


def test_a_table_with_no_records_is_not_printed_or_written(tmp_path, capsys):
    """Only MNIST records: `--tables 1,2,3` prints and writes Table 1, and says so for the
    CIFAR tables, instead of printing "0 of 0 cells" tables of "not run"."""
    code, out = tables_main(tmp_path, record(), args=("--compare",))
    assert code == 0
    printed, err = capsys.readouterr()
    assert "Table 1: MNIST" in printed and "CIFAR" not in printed and "0 of 0 cells" not in printed
    assert sorted(p.name for p in out.iterdir()) == ["headline.md", "table1.csv", "table1.md", "table1.tex"]
    assert "note: table 2 (CIFAR-10): no records of its cells: not written" in err
    assert "note: table 3 (CIFAR-100): no records of its cells: not written" in err


def test_readme_needs_records_of_table_1(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- headline:begin (dfarun-tables --readme writes from here to the end marker) -->\n"
                      "<!-- headline:end -->\n")
    cifar = record(dataset="cifar10", row="1x1000 Tanh", method="bp", max_epochs=300)
    code, out = tables_main(tmp_path, cifar, args=("--tables", "1,2", "--compare", "--readme", str(readme)))
    assert code == 2 and not out.exists()
    assert "--readme: table 1 has no records of its cells in this store" in capsys.readouterr().err


def test_legend_words_only_what_a_table_shows(tmp_path, capsys):
    """A table without n=1 or demo cells keeps the legend it always had (the committed results)."""
    code, out = tables_main(tmp_path, *(record(seed=s, test=1.5 + s / 10) for s in range(3)))
    assert code == 0
    md = (out / "table1.md").read_text()
    assert "n=1:" not in md and "demo" not in md
    assert "n= where fewer seeds than asked for learned.\n" in md
