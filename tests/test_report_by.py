"""`dfarun-tables --by KEYS` and `dfarun-figures curves --by KEYS`: any store summarised by the
settings a user names, paper cells or not, synthetic data included."""
from __future__ import annotations

import statistics
import subprocess
import sys

import pandas as pd
import pytest

from dfarun.report import figures, groups, records, tables
from dfarun.run import store

from helpers import ROOT, record


def synthetic(method="dfa", lr=1e-3, seed=0, test=10.0, key=None, width=50, **extra):
    """A record of a synthetic run (no paper row), as the runner writes it."""
    extra.setdefault("train", None if test is None else test / 2)
    rec = record(dataset="synthetic", row="3x50 Tanh", method=method, seed=seed, test=test,
                 key=key or f"{method}-{lr}-{width}", **extra)
    rec["config"]["dataset"] |= {"classes": 10, "features": 16, "train_size": 256}
    rec["config"]["model"] |= {"name": "3x50_tanh", "label": "3x50 Tanh", "width": width, "depth": 3}
    rec["config"] |= {"lr": lr}
    return rec


def write(runs, *recs):
    for i, rec in enumerate(recs):
        store.write(runs / f"r{i:03}.json", rec)
    return runs


def by(tmp_path, runs, *args):
    return tables.main(["--store", str(runs), "--out", str(tmp_path / "out"), *args])


def test_by_writes_one_row_per_group_with_its_numbers_and_shared_settings(tmp_path, capsys):
    runs = write(tmp_path / "runs",
                 *(synthetic("bp", 1e-3, s, test=t) for s, t in enumerate([10.0, 12.0, 14.0])),
                 *(synthetic("dfa", 1e-3, s, test=t) for s, t in enumerate([20.0, 22.0])),
                 synthetic("dfa", 1e-2, 0, test=30.0),
                 synthetic("dfa", 1e-2, 1, test=None, stop="diverged", train=None))
    assert by(tmp_path, runs, "--by", "method.name,lr") == 0
    printed = capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "out" / "by_method.name+lr.csv")
    assert list(csv.columns) == ["method.name", "lr", *groups.CSV]
    assert list(zip(csv["method.name"], csv.lr)) == [("bp", 0.001), ("dfa", 0.001), ("dfa", 0.01)]
    bp = csv.iloc[0]
    assert bp.test_mean == 12.0 and bp.test_std == pytest.approx(statistics.stdev([10, 12, 14]))
    assert (bp.seeds_learned, bp.seeds_run, bp.experiments, bp.stop) == (3, 3, 1, "converged:3")
    assert bp.train_mean == 6.0 and not bp.demo
    lines = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line
             for line in printed.splitlines() if line.startswith("| bp") or line.startswith("| dfa")}
    assert "| 12.00 ± 2.00%" in lines["bp 0.001"] and "| 3/3 " in lines["bp 0.001"]
    assert "| 30.00% n=1 " in lines["dfa 0.01"] and "| 1/2 " in lines["dfa 0.01"]  # one learned: no std
    assert "converged ×1, diverged ×1" in lines["dfa 0.01"]
    assert "Every record here shares: dataset.features=16, dataset.name=synthetic," in printed  # classes=10: its own
    for ext in ("md", "tex"):
        assert "method.name" in (tmp_path / "out" / f"by_method.name+lr.{ext}").read_text()


def test_by_counts_every_record_of_the_store(tmp_path, capsys):
    """The paper's tables leave out a run of other settings under a paper label; --by counts it,
    and the settings it does not share with its group's others are not called shared."""
    real = record(method="bp", seed=0, test=1.6, key="real", max_epochs=300)
    narrow = record(method="bp", seed=0, test=80.0, key="narrow", max_epochs=300)
    narrow["config"]["model"]["width"] = 3
    runs = write(tmp_path / "runs", real, narrow, synthetic())
    assert by(tmp_path, runs, "--by", "model.width") == 0
    csv = pd.read_csv(tmp_path / "out" / "by_model.width.csv").set_index("model.width")
    assert list(csv.index) == [3, 50, 800] and csv.loc[3, "test_mean"] == 80.0 and csv.loc[800, "test_mean"] == 1.6
    assert by(tmp_path, runs, "--by", "model.name") == 0
    two = pd.read_csv(tmp_path / "out" / "by_model.name.csv").set_index("model.name").loc["2x800_tanh"]
    assert two.seeds_run == 2 and two.experiments == 2 and "model.width" not in two.shared
    assert "dataset.name=mnist" in two.shared and "model.label" not in two.shared  # the label is the model's own
    assert capsys.readouterr().err == ""  # no note: nothing is left out


def test_a_key_a_record_predates_is_its_default_and_where_selects(tmp_path, capsys):
    old = synthetic(seed=0)
    assert "rmsprop_init" not in old["config"]
    new = synthetic(seed=0, key="init1")
    new["config"]["rmsprop_init"] = 1.0
    runs = write(tmp_path / "runs", old, new, synthetic("bp", seed=0, lr=3e-3))
    assert by(tmp_path, runs, "--by", "rmsprop_init") == 0
    assert list(pd.read_csv(tmp_path / "out" / "by_rmsprop_init.csv").rmsprop_init) == [0.0, 1.0]
    assert by(tmp_path, runs, "--by", "method.name", "--where", "lr=1e-3", "--where", "rmsprop_init=0") == 0
    csv = pd.read_csv(tmp_path / "out" / "by_method.name+where_lr=0.001+where_rmsprop_init=0.csv")
    assert list(csv["method.name"]) == ["dfa"] and csv.seeds_run.tolist() == [1]  # 0.001 is 1e-3
    assert "Only records with lr=1e-3, rmsprop_init=0." in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--by", "lrr"], "--by='lrr': lrr is no setting of these records or of dfarun's config (did you mean lr"),
    (["--by", "model"], "model is a group of settings; name one: model.activation,"),
    (["--by", "lr,lr"], "expected distinct dotted config keys"),
    (["--by", "lr", "--compare"], "--compare: not with --by"),
    (["--by", "lr", "--tables", "1"], "--tables: not with --by"),
    (["--by", "lr", "--readme", "README.md"], "--readme: not with --by"),
    (["--where", "lr=1e-3"], "--where: only with --by"),
    (["--by", "lr", "--where", "method.name=fa"], "no record has these settings"),
    (["--by", "lr", "--where", "lr"], "expected KEY=VALUE"),
])
def test_by_refuses_what_it_cannot_answer_in_one_line_and_writes_nothing(tmp_path, capsys, args, words):
    runs = write(tmp_path / "runs", synthetic())
    assert by(tmp_path, runs, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dfarun-tables: error: ") and words in err
    assert not (tmp_path / "out").exists()


def test_by_on_an_empty_store_is_refused(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert by(tmp_path, tmp_path / "runs", "--by", "lr") == 2
    assert "no valid run records in this store" in capsys.readouterr().err


def test_curves_by_draws_one_line_per_group_from_any_store(tmp_path, capsys):
    runs = write(tmp_path / "runs", *(synthetic(m, seed=s) for m in ("bp", "dfa") for s in (0, 1)),
                 synthetic("dfa", lr=1e-2, seed=0, epochs=3))
    out = tmp_path / "figs"
    assert figures.main(["curves", "--store", str(runs), "--by", "method.name,lr", "--out", str(out)]) == 0
    assert "curves: " in capsys.readouterr().out
    assert (out / "curves_by_method.name+lr.png").stat().st_size > 0
    csv = pd.read_csv(out / "curves_by_method.name+lr.csv")
    assert set(csv.group) == {"bp, 0.001", "dfa, 0.001", "dfa, 0.01"} and set(csv.by) == {"method.name,lr"}
    bp = csv[csv.group == "bp, 0.001"]
    assert list(bp.epoch) == list(range(1, 8)) and set(bp.seeds) == {2}          # helpers.record: 7 epochs
    assert bp.train_mean.iloc[0] == 50.0 and bp.test_max.iloc[1] == 20.0         # 50/k and 40/k
    assert list(csv[csv.group == "dfa, 0.01"].epoch) == [1, 2, 3]
    assert figures.main(["curves", "--store", str(runs), "--by", "nope", "--out", str(out)]) == 2
    assert "dfarun-figures: error: --by='nope'" in capsys.readouterr().err


def test_by_and_curves_on_records_the_runner_wrote(make_cfg, tmp_path, capsys):
    """Synthetic data end to end: two tiny jobs, summarised and drawn by method."""
    from dfarun.run.runner import run_records

    for method in ("bp", "dfa"):
        run_records(make_cfg("model=3x50_tanh", f"method={method}", "seeds=[0,1]"))
    runs = tmp_path / "runs"
    capsys.readouterr()
    assert tables.main(["--store", str(runs), "--by", "method.name"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "| bp " in out and "| dfa " in out and " demo " in out   # 2 epochs of 300
    assert figures.main(["curves", "--store", str(runs), "--by", "method.name"]) == 0
    assert (runs / "figures" / "curves_by_method.name.png").is_file()
    assert (runs / "tables" / "by_method.name.md").is_file()


def test_the_report_layer_runs_without_torch():
    """dfarun-tables prints Markdown: it must not pay torch's import (Figure 3 imports it when drawn)."""
    done = subprocess.run([sys.executable, "-c", "import sys, dfarun.report.tables, dfarun.report.figures, "
                           "dfarun.report.curves, dfarun.run.record; print('torch' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_records_read_once_give_the_same_numbers_as_a_frame(tmp_path):
    runs = write(tmp_path / "runs", *(synthetic(seed=s, test=10.0 + s) for s in range(3)))
    recs = records.read([runs])
    assert tables.aggregate(recs).equals(tables.aggregate(records.frame(recs)))
