"""The aggregator on hand-made records, and the experiment grids against the paper's tables."""
from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from dfarun.report import headline
from dfarun.report import records
from dfarun.run import store
from dfarun.report import tables
from dfarun.config.schema import CONF_DIR
from dfarun.config.schema import row_label

from helpers import record


def write(tmp_path, *recs):
    for i, rec in enumerate(recs):
        store.write(tmp_path / f"r{i}.json", rec)
    return tables.aggregate(tables.load_records(tmp_path))


def cell(frame, row, method):
    return frame.set_index("Model").loc[row, method.upper()]


def test_mean_std_and_brackets(tmp_path):
    cells = write(tmp_path,
                  record(seed=0, test=1.5, train=0.0), record(seed=1, test=1.7, train=0.02),
                  record(seed=2, test=1.9, train=0.04),
                  record(method="bp", seed=0, test=1.6, train=0.0), record(method="bp", seed=1, test=1.6),
                  record(method="bp", seed=2, test=1.6))
    t = tables.build(1, cells, compare=False)
    frame, notes = t.frame, t.notes
    std = statistics.stdev([1.5, 1.7, 1.9])
    assert cell(frame, "2x800 Tanh", "dfa") == f"1.70 ± {std:.2f}% (0.02%)"  # mean train 0.02% > 0.01%
    assert cell(frame, "2x800 Tanh", "bp") == "1.60 ± 0.00%"                 # train 0% : no brackets
    assert cell(frame, "2x800 Tanh", "fa") == "not run"
    assert cell(frame, "1x800 Tanh", "bp") == "not run"
    assert any("Profile quick: 3 seeds, at most 20 epochs" in n for n in notes)


def test_dash_when_no_seed_learned_and_n_when_fewer_seeds(tmp_path):
    cells = write(tmp_path,
                  record(row="100x240 Tanh", method="bp", seed=0, test=88.7, train=89.6, stop="max_epochs"),
                  record(row="100x240 Tanh", method="bp", seed=1, test=None, train=None, stop="diverged"),
                  record(row="100x240 Tanh", method="dfa", seed=0, test=3.9, train=0.1),
                  record(row="100x240 Tanh", method="dfa", seed=1, test=4.1, train=0.14),
                  record(row="100x240 Tanh", method="dfa", seed=2, test=None, train=None, stop="diverged"))
    t = tables.build(1, cells, compare=False)
    assert cell(t.frame, "100x240 Tanh", "bp") == "— demo"  # seed 0 ran out of the 20-epoch budget
    assert cell(t.frame, "100x240 Tanh", "dfa") == "4.00 ± 0.14% (0.12%) n=2"
    assert cell(t.details, "100x240 Tanh", "bp") == "0/3 learned, 7 ep, max_epochs ×1, diverged ×1"
    assert cell(t.details, "100x240 Tanh", "dfa") == "2/3 learned, 7 ep, converged ×2, diverged ×1"
    assert cell(t.details, "100x240 Tanh", "fa") == ""


def test_compare_column_and_count(tmp_path):
    cells = write(tmp_path,
                  *[record(row="1x800 Tanh", method="bp", seed=s, test=t) for s, t in enumerate([1.59, 1.63, 1.67])],
                  *[record(row="1x800 Tanh", method="dfa", seed=s, test=t) for s, t in enumerate([2.0, 2.1, 2.2])])
    t = tables.build(1, cells, compare=True)
    frame, notes = t.frame, t.notes
    assert cell(frame, "1x800 Tanh", "bp") == "1.63 ± 0.04% / 1.59 ± 0.04% (+1.0σ)"   # (1.63-1.59)/0.04
    assert cell(frame, "1x800 Tanh", "dfa") == "2.10 ± 0.10% / 1.68 ± 0.05% (+8.4σ)"
    assert cell(frame, "100x240 Tanh", "bp") == "not run / —"
    assert "1 of 2 cells within 2 paper std" in notes[-1]


def test_conv_rows_and_table3_unknown_bp_cells(tmp_path):
    frame = tables.build(3, write(tmp_path, record(dataset="cifar100", row="3x1000 Tanh", method="bp",
                                                      test=72.5, train=0.3),
                                     record(dataset="cifar100", row="CONV Tanh", method="dfa", key="c",
                                            test=59.5, train=0.1)), compare=True).frame
    assert cell(frame, "CONV Tanh", "dfa") == "59.5% n=1 / 59.0 ± 0.3% (+1.7σ)"  # one seed: no std
    assert cell(frame, "CONV Tanh", "bp") == "not run / ?"
    assert cell(frame, "1x1000 Tanh", "bp") == "not run / ?"
    assert cell(frame, "3x1000 Tanh", "bp") == "72.5% (0.30%) n=1 / 72.0 ± 0.3% (0.20%) (+1.7σ)"


def test_best_val_epoch_is_used_when_present(tmp_path):
    cells = write(tmp_path, record(row="2x800 Tanh + DO", test=1.9, train=0.5, seeds=(0,),
                                   best_val={"epoch": 3, "val_error": 1.2, "test_error": 1.3, "train_error": 0.2}))
    frame = tables.build(1, cells, compare=False).frame
    assert cell(frame, "2x800 Tanh + DO", "dfa") == "1.30% (0.20%) n=1"


def test_the_largest_budget_wins_when_experiments_overlap(tmp_path):
    cells = write(tmp_path, record(key="short", max_epochs=2, test=9.0, seeds=(0,)),
                  record(key="long", max_epochs=20, test=2.0, seeds=(0,)))
    assert cell(tables.build(1, cells, compare=False).frame, "2x800 Tanh", "dfa") == "2.00% n=1"


def test_foreign_and_broken_files_are_skipped_with_a_warning(tmp_path, capsys):
    store.write(tmp_path / "ok.json", record())
    (tmp_path / "truncated.json").write_text('{"format": 2, "key": ')
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "old.json").write_text(json.dumps({**record(), "format": 1}))
    (tmp_path / "list.json").write_text("[1, 2]")
    frame = tables.load_records(tmp_path)
    assert list(frame.seed) == [0]
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 4


BAD_FILES = {
    "list.json": "[1, 2]",
    "number.json": "3",
    "empty.json": "",
    "truncated.json": json.dumps(record())[:-40],
    "binary.json": b"\x89PNG\r\n\x1a\n\x00\xff",
    "format1.json": json.dumps({**record(), "format": 1}),
    "no_format.json": json.dumps({k: v for k, v in record().items() if k != "format"}),
    "seed_str.json": json.dumps(record(seed="3")),
    "seed_bool.json": json.dumps(record(seed=True)),
    "test_str.json": json.dumps(record(test="1.5")),
    "test_nan.json": json.dumps(record(test=float("nan"))),
    "config_list.json": json.dumps({**record(), "config": [1]}),
    "no_row.json": json.dumps({k: v for k, v in record().items() if k != "row"}),
    "dataset_str.json": json.dumps({**record(), "config": {**record()["config"], "dataset": "mnist"}}),
    "best_val_list.json": json.dumps(record(best_val=[1.3])),
    "deep.json": "[" * 100_000,  # json's parser recurses: RecursionError, not ValueError
}


def test_tables_cli_skips_every_kind_of_bad_file_with_one_line_and_counts_none(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in (0, 1):
        store.write(runs / f"good{seed}.json", record(seed=seed, test=1.0 + seed))
    store.write(runs / "good0_copy.json", record(seed=0, test=9.0))       # same (key, seed): not twice
    for name, text in BAD_FILES.items():
        (runs / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (runs / ".good2.json.abc123.tmp").write_text('{"format": 2, "ke')      # a write in progress
    (runs / "folder.json").mkdir()                                        # not even a file
    os.mkfifo(runs / "pipe.json")                                         # reading it would block
    (runs / "notes.txt").write_text("not a record")

    frame = tables.load_records(runs)
    assert sorted(frame.seed) == [0, 1] and sorted(frame.test_error) == [1.0, 2.0]
    err = capsys.readouterr().err.splitlines()
    skipped = {Path(re.match(r"warning: skipping (\S+): \S", line)[1]).name for line in err}
    assert skipped == set(BAD_FILES) | {"good0_copy.json", "folder.json", "pipe.json"}
    assert len(err) == len(skipped)                                        # one line each
    assert all(line.startswith("warning: skipping ") for line in err)

    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    out = capsys.readouterr()
    assert "1.50 ± 0.71%" in out.out                                        # seeds 0 and 1 only
    assert out.err.count("warning: skipping") == len(skipped)
    assert "Traceback" not in out.err


def test_cli_writes_md_tex_csv(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    store.write(runs / "a.json", record())
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1", "--compare"]) == 0
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "out" / f"table1.{ext}").read_text()
    assert "| 2x800 Tanh" in capsys.readouterr().out
    assert tables.main(["--store", str(tmp_path / "nope")]) == 2
    assert tables.main(["--store", str(runs), "--tables", "4"]) == 2


def test_csv_holds_numbers_one_line_per_cell(tmp_path):
    runs = tmp_path / "runs"
    for seed, (test, stop) in enumerate([(1.6, "converged"), (1.7, "converged"), (1.8, "max_epochs")]):
        store.write(runs / f"bp{seed}.json", record(row="1x800 Tanh", method="bp", seed=seed, test=test, stop=stop,
                                                    max_epochs=300, epochs=80 + seed, seeds=range(5)))
    store.write(runs / "dfa.json", record(row="1x800 Tanh", seed=0, stop="diverged", train=None, test=None))
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    csv = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert list(csv.columns) == tables.CSV
    paper = tables.paper_results().query("table == 1")
    assert list(zip(csv.row, csv.method)) == list(zip(paper.row, paper.method))   # every cell, the paper's order
    bp = csv.set_index(["row", "method"]).loc[("1x800 Tanh", "bp")]
    assert bp.test_mean == pytest.approx(1.7) and bp.test_std == pytest.approx(0.1) and bp.train_mean == 0
    assert (bp.seeds_learned, bp.seeds_run, bp.seeds_asked, bp.epochs_mean, bp.max_epochs) == (3, 3, 5, 81, 300)
    assert bp.stop == "converged:2 max_epochs:1" and bp.profile == "quick"
    assert (bp.paper_status, bp.paper_test_mean, bp.paper_test_std) == ("value", 1.59, 0.04)
    assert bp.distance_paper_std == pytest.approx((1.7 - 1.59) / 0.04, abs=1e-4)
    dfa = csv.set_index(["row", "method"]).loc[("1x800 Tanh", "dfa")]
    assert (dfa.seeds_learned, dfa.seeds_run, dfa.stop) == (0, 1, "diverged:1") and pd.isna(dfa.test_mean)
    assert pd.isna(dfa.distance_paper_std)
    unrun = csv.set_index(["row", "method"]).loc[("7x240 Tanh", "fa")]
    assert (unrun.seeds_run, unrun.paper_train_error) == (0, 0.02) and pd.isna(unrun.test_mean)
    no_paper = csv.set_index(["row", "method"]).loc[("100x240 Tanh", "bp")]
    assert no_paper.paper_status == "no_convergence" and pd.isna(no_paper.paper_test_mean)

    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| 1x800 Tanh       | 1.70 ± 0.10% n=3 " in md                       # 5 asked, 3 learned
    assert "| 1x800 Tanh       | 3/5 learned, 81 ep, converged ×2, max_epochs ×1 | " in md
    assert "0/3 learned, 7 ep, diverged ×1" in md
    tex = (tmp_path / "out" / "table1.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 2
    assert r"\hline" not in tex and r"1.70 $\pm$ 0.10\% n=3" in tex and r"max\_epochs $\times$1" in tex


# --- the grids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("table", [1, 2, 3])
def test_grids_hold_exactly_the_papers_rows_and_methods(table, make_cfg):
    grid = OmegaConf.load(CONF_DIR / "experiment" / f"table{table}.yaml").hydra.sweeper.params
    methods = grid.method.split(",")
    labels = set()
    for row in grid.row.split(","):
        cfg = make_cfg(f"experiment=table{table}", f"row={row}", tiny=False)
        assert cfg.dataset.name == tables.TABLES[table][0] and cfg.table == table
        assert cfg.profile == "paper" and len(cfg.seeds) == 10 and cfg.max_epochs == 300
        labels.add(row_label(cfg))
    paper = tables.paper_results().query("table == @table")
    assert sorted(methods) == ["bp", "dfa", "fa"] == sorted(set(paper.method))  # the paper's three rules
    assert labels == set(paper.row)


def test_quick_profile_overrides_the_experiments(make_cfg):
    cfg = make_cfg("experiment=table1", "profile=quick", "row=1x800_tanh", tiny=False)
    assert (cfg.profile, list(cfg.seeds), cfg.max_epochs) == ("quick", [0, 1, 2], 20)
    cfg = make_cfg("experiment=table1", "profile=quick", "max_epochs=3", "row=1x800_tanh", tiny=False)
    assert cfg.max_epochs == 3


def test_headline_costs_core_time_on_a_cpu_and_plain_seconds_on_a_gpu(tmp_path):
    """Per job (a list of seeds on one device): its longest seed's epochs x that seed's median
    epoch seconds (a paused epoch's 1000 s does not count), times its threads on a CPU; the
    jobs of a cell add up. 2x800 DFA: seeds 0-2 on a 2-thread CPU, 3-5 on a 1-thread CPU,
    6-7 on a GPU. 1x800 BP has a record without epoch times: its cost is unknown, not zero."""
    def rec(seed, seeds, epochs, device, threads, per_epoch=60.0, row="2x800 Tanh", method="dfa"):
        r = record(row=row, method=method, seed=seed, seeds=seeds, epochs=epochs, max_epochs=300, test=1.7,
                   device=device, cpu_threads=threads)
        for h in r["history"]:
            h["seconds"] = per_epoch
        return r
    cpu_a = [rec(s, (0, 1, 2), 10 + s, "cpu", 2) for s in (0, 1, 2)]
    cpu_a[2]["history"][0]["seconds"] = 1000.0  # paused under SIGSTOP
    cpu_b = [rec(s, (3, 4, 5), 30, "cpu", 1) for s in (3, 4, 5)]
    gpu = [rec(s, tuple(range(8)), 20, "NVIDIA H200", 5, per_epoch=1.0) for s in (6, 7)]
    unknown = rec(0, (0,), 5, "cpu", 1, row="1x800 Tanh", method="bp")
    del unknown["history"][3]["seconds"]
    write(tmp_path, *cpu_a, *cpu_b, *gpu, unknown)
    recs = records.read([tmp_path])
    dfa = [r for r in recs if r.row == "2x800 Tanh"]
    assert headline.costs(dfa) == (12 * 60 * 2 + 30 * 60 * 1, 20 * 1.0)  # 24 + 30 core-minutes; 20 GPU s
    text = headline.render(tables.numbers(1, tables.aggregate(records.frame(recs))), recs)
    (line,) = [x for x in text.splitlines() if x.startswith("| 2x800 Tanh | DFA")]
    assert line.endswith("| -0.5 σ | 8 | 20 | converged ×8 | 54 min | 20 s |"), line  # 163 epochs / 8
    (line,) = [x for x in text.splitlines() if x.startswith("| 1x800 Tanh | BP")]
    assert line.endswith("| converged ×1 | ? |  |"), line
    assert "\n**1 of 2 cells lie within 2 paper std of the paper.** Not run yet: the cells 1x800 Tanh FA, " \
           "1x800 Tanh DFA, 2x800 Tanh BP, 2x800 Tanh FA; the rows 7x240 Tanh, 100x240 Tanh," in text  # 1x800 BP: 1.70 against 1.59 ± 0.04


def test_a_zero_distance_reads_plus_zero():
    assert headline.sigma(-2.8e-15) == "+0.0" and headline.sigma(-0.04) == "+0.0"
    assert headline.sigma(2.46) == "+2.5" and headline.sigma(-13.05) == "-13.1"


def test_runs_of_other_settings_under_a_paper_label_are_left_out_with_a_note(tmp_path, capsys):
    """`model=2x800_tanh model.width=3` is labelled "2x800 Tanh" but is not that row: it must
    not fill the cell, however many seeds it has; a shorter budget (max_epochs) still does."""
    runs = tmp_path / "runs"
    store.write(runs / "real.json", record(method="bp", seed=0, test=1.6, key="real", max_epochs=300, seeds=(0,)))
    for seed in range(3):
        narrow = record(method="bp", seed=seed, test=80.0, key="narrow", max_epochs=300)
        narrow["config"]["model"]["width"] = 3
        store.write(runs / f"narrow{seed}.json", narrow)
        small = record(method="dfa", seed=seed, test=50.0, key="small")
        small["config"]["dataset"]["train_size"] = 50
        store.write(runs / f"small{seed}.json", small)
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    out, err = capsys.readouterr()
    unfiltered = tables.aggregate(tables.load_records(runs)).set_index(["row", "method"])
    assert unfiltered.loc[("2x800 Tanh", "bp"), "test_mean"] == 80.0  # by seeds, the narrow net would win
    assert "1.60% n=1" in out and "80.00" not in out and "50.00" not in out
    assert "note: mnist 2x800 Tanh BP: records with other settings than the paper's cell left out (model.width=3)" in err
    assert "note: mnist 2x800 Tanh DFA: records with other settings than the paper's cell left out " \
           "(dataset.train_size=50)" in err


def test_a_longer_budget_than_the_cells_is_left_out_and_a_rows_own_limit_is_its_budget(tmp_path, capsys):
    """The paper stopped at 300 epochs: a 1000-epoch run of the same settings is not its cell
    (by budget it would win over the real seeds). The dropout row trains 150 epochs whatever
    max_epochs says (train_epochs), so its records say 150 and max_epochs=1000 changes nothing."""
    runs = tmp_path / "runs"
    for seed in range(3):
        store.write(runs / f"real{seed}.json", record(method="bp", seed=seed, test=1.6, key="real", max_epochs=300))
        do = record(row="2x800 Tanh + DO", method="bp", seed=seed, test=1.4, key="do", max_epochs=1000, epochs=150)
        assert do["config"]["train_epochs"] == 150  # the cell's own settings (helpers.paper_settings)
        store.write(runs / f"do{seed}.json", do)
    store.write(runs / "long.json", record(method="bp", seed=0, test=9.0, key="long", max_epochs=1000, seeds=(0,)))
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    out, err = capsys.readouterr()
    assert "1.60 ± 0.00%" in out and "9.00" not in out and "1.40 ± 0.00%" in out
    assert "note: mnist 2x800 Tanh BP: records with other settings than the paper's cell left out " \
           "(max_epochs=1000 (the cell's limit is 300))" in err
    assert "2x800 Tanh + DO" not in err
    assert "at most 150 epochs (3 cells: 2x800 Tanh + DO)" not in out  # one cell here: BP
    assert "at most 150 epochs (1 cells: 2x800 Tanh + DO)" in out and "at most 300 epochs (1 cells: 2x800 Tanh)" in out
    assert tables.main(["--store", str(runs), "--tables", "1"]) == 0  # without --out: beside the store
    assert (runs / "tables" / "table1.md").is_file()


def test_a_rule_the_paper_did_not_run_gets_a_column_of_its_own(tmp_path, capsys):
    """A new rule (rules.py) run on a paper row: its column beside BP/FA/DFA, "not in the
    paper" for the paper's number, out of the headline's count; its cell's settings are the
    row's, so a run of it with another rate is left out as the paper's rules' would be."""
    runs = tmp_path / "runs"
    for seed in range(3):
        store.write(runs / f"bp{seed}.json", record(method="bp", seed=seed, test=1.6, key="bp", max_epochs=300))
        new = record(method="bp", seed=seed, test=2.5, key="new", max_epochs=300)
        new["config"]["method"]["name"] = "dfa_sign"
        store.write(runs / f"new{seed}.json", new)
        fast = record(method="bp", seed=seed, test=9.0, key="fast", max_epochs=300)
        fast["config"]["method"]["name"], fast["config"]["lr"] = "dfa_sign", 1e-2
        store.write(runs / f"fast{seed}.json", fast)
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1", "--compare"]) == 0
    out, err = capsys.readouterr()
    header = next(line for line in out.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", "BP", "FA", "DFA", "DFA_SIGN"]
    row = next(line for line in out.splitlines() if line.startswith("| 2x800 Tanh "))
    assert "2.50 ± 0.00% / not in the paper" in row and "9.00" not in out
    assert "mnist 2x800 Tanh DFA_SIGN: records with other settings than the paper's cell left out (lr=0.01)" in err
    assert "1 of 1 cells within 2 paper std" in out  # BP's; the new rule has no paper number
    csv = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert csv.query("method == 'dfa_sign'").paper_status.tolist() == ["none"]
    assert "DFA_SIGN" not in (tmp_path / "out" / "headline.md").read_text()


def test_tables_refuse_a_store_without_records_and_write_nothing_half(tmp_path, capsys):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    assert tables.main(["--store", str(empty), "--out", str(out)]) == 2
    assert "no run records of table 1,2,3's cells there" in capsys.readouterr().err and not out.exists()
    store.write(empty / "fig.json", record(row="3x50 Tanh"))  # a figure's run: no table's cell
    store.write(empty / "cifar.json", record(dataset="cifar10", row="1x1000 Tanh"))
    assert tables.main(["--store", str(empty), "--out", str(out), "--tables", "1"]) == 2
    assert "no run records of table 1's cells there" in capsys.readouterr().err and not out.exists()
    runs = tmp_path / "runs"
    store.write(runs / "a.json", record())
    (out / "table1.tex").mkdir(parents=True)  # in the way of the second file
    assert tables.main(["--store", str(runs), "--out", str(out), "--tables", "1"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out / 'table1.tex'}" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["table1.tex"]  # neither .md nor .csv: no half set


def test_readme_gets_the_headline_between_its_markers_and_nothing_else(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    store.write(runs / "a.json", record())                           # 2x800 Tanh DFA only
    readme = tmp_path / "README.md"
    readme.write_text(f"# Mine\n\nabove\n{headline.BEGIN}\nold table\n{headline.END}\n\nbelow, by hand\n")
    args = ["--store", str(runs), "--out", str(out), "--tables", "1", "--compare", "--readme", str(readme)]
    assert tables.main(args) == 0
    text, rendered = readme.read_text(), (out / "headline.md").read_text()
    assert text == f"# Mine\n\nabove\n{headline.BEGIN}\n{rendered.strip()}\n{headline.END}\n\nbelow, by hand\n"
    assert "**0 of 1 cells lie within 2 paper std of the paper.** Not run yet: the cells 2x800 Tanh BP, " \
           "2x800 Tanh FA; the rows 7x240 Tanh, 100x240 Tanh, 1x800 Tanh," in rendered  # record(): 1.5% against 1.74 ± 0.08
    assert tables.main(args) == 0 and readme.read_text() == text      # a second run changes nothing

    # refused, with nothing written: a README without the markers, or --readme without the headline
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    capsys.readouterr()
    for extra in (["--readme", str(bare)], ["--readme", str(tmp_path / "missing.md")]):
        fresh = tmp_path / "fresh"
        assert tables.main([*args[:-2], "--out", str(fresh), *extra]) == 2  # the last --out counts
        assert not fresh.exists()
    err = capsys.readouterr().err
    assert "--readme=" in err and "headline:begin" in err and "expected a Markdown file" in err
    assert tables.main(["--store", str(runs), "--out", str(out), "--tables", "1", "--readme", str(readme)]) == 2
    assert "needs Table 1 in --tables and --compare" in capsys.readouterr().err
    assert bare.read_text() == "no markers\n"


@pytest.mark.parametrize("text, words", [
    ("no markers\n", "found 0 and 0"),
    (f"{headline.BEGIN}\n{headline.BEGIN}\nx\n{headline.END}\n", "found 2 and 1"),
    (f"```\n{headline.BEGIN}\n{headline.END}\n```\n{headline.BEGIN}\n{headline.END}\n", "found 2 and 2"),
    (f"{headline.END}\n{headline.BEGIN}\n", "the end line first"),
    (f"{headline.BEGIN[:-4]}X -->\n{headline.END}\n", "found 0 and 1"),     # not the marker
    (f"a\u2028{headline.BEGIN}\n{headline.END}\n", "found 0 and 1"),         # not a line of its own
])
def test_readme_markers_must_be_one_pair_of_whole_lines(tmp_path, capsys, text, words):
    runs = tmp_path / "runs"
    store.write(runs / "a.json", record())
    readme = tmp_path / "README.md"
    readme.write_text(text)
    args = ["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1", "--compare", "--readme", str(readme)]
    assert tables.main(args) == 2
    assert words in capsys.readouterr().err and readme.read_text() == text and not (tmp_path / "out").exists()


def test_readme_keeps_its_line_endings_mode_and_symlink(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    store.write(runs / "a.json", record())
    target = tmp_path / "docs" / "README.md"
    target.parent.mkdir()
    target.write_bytes(f"top `{headline.END}` inline\r\n{headline.BEGIN}\r\nold\r\n{headline.END}\r\nend\r\n".encode())
    target.chmod(0o664)
    link = tmp_path / "README.md"
    link.symlink_to(target)
    assert tables.main(["--store", str(runs), "--out", str(out), "--tables", "1", "--compare", "--readme", str(link)]) == 0
    data = target.read_bytes().decode()
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o664
    assert data.startswith(f"top `{headline.END}` inline\r\n{headline.BEGIN}\r\n| row |") and data.endswith(f"{headline.END}\r\nend\r\n")
    assert "\n" not in data.replace("\r\n", "") and "old" not in data
    # a README that is one of the run's own outputs is refused
    assert tables.main(["--store", str(runs), "--out", str(out), "--tables", "1", "--compare",
                        "--readme", str(out / "table1.md")]) == 2
    assert "is one of the tables this run writes" in capsys.readouterr().err


def test_readme_markers_may_be_indented_or_follow_a_bom_and_a_symlink_loop_is_refused(tmp_path, capsys):
    text = f"\ufeff{headline.BEGIN}\nold\n  {headline.END}  \nrest\n"
    assert headline.splice(text, "new\n") == f"\ufeff{headline.BEGIN}\nnew\n  {headline.END}  \nrest\n"
    runs, loop = tmp_path / "runs", tmp_path / "loop.md"
    store.write(runs / "a.json", record())
    loop.symlink_to(loop)
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1", "--compare",
                        "--readme", str(loop)]) == 2
    err = capsys.readouterr().err
    assert "--readme=" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_rows_own_settings_for_one_method_are_that_cells(tmp_path, capsys):
    """conf/row_method/2x800_tanh_do_fa.yaml: FA's dropout-row cell has its own rate, decay and
    training time; a FA run with the row's (BP's) settings is left out of it with a note."""
    from dfarun.report import cells

    (fa, fa_limit), (bp, bp_limit) = (cells.table_cell("mnist", "2x800 Tanh + DO", m) for m in ("fa", "bp"))
    assert (fa["lr"], fa["halve_every"], fa_limit) == (3e-4, 100, 300) and (bp["lr"], bp_limit) == (1e-3, 150)
    runs = tmp_path / "runs"
    for seed in range(2):
        store.write(runs / f"fa{seed}.json", record(row="2x800 Tanh + DO", method="fa", seed=seed, key="fa",
                                                    max_epochs=300, test=1.5))
        as_bp = record(row="2x800 Tanh + DO", method="fa", seed=seed, key="as_bp", max_epochs=300, test=1.9)
        as_bp["config"] |= {k: bp[k] for k in ("lr", "halve_every", "train_epochs")}
        store.write(runs / f"as_bp{seed}.json", as_bp)
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), "--tables", "1"]) == 0
    out, err = capsys.readouterr()
    assert "1.50 ± 0.00%" in out and "1.90" not in out
    assert "2x800 Tanh + DO FA: records with other settings than the paper's cell left out (halve_every=50, " \
           "lr=0.001, train_epochs=150)" in err
