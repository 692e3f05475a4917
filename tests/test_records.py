"""The shared record reader: every field it checks, the definition of a learned seed, the
experiment that fills a cell, and tables and figures agreeing on the same records."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from dfarun.report import figures
from dfarun.report import records
from dfarun.run import store
from dfarun.run.record import Record
from dfarun.report import tables

from helpers import record


def read_one(tmp_path, rec, capsys) -> tuple[list[Record], str]:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    got = records.read([tmp_path])
    return got, capsys.readouterr().err


# --- every field, every kind of wrong ------------------------------------------------------------

def _set(rec, dotted, value):
    """A copy of rec with the field at `dotted` ("config.seeds", "history.0.epoch") set, or
    removed when value is DELETE."""
    rec = copy.deepcopy(rec)
    *parents, last = dotted.split(".")
    obj = rec
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if value is DELETE:
        del obj[int(last) if isinstance(obj, list) else last]
    else:
        obj[int(last) if isinstance(obj, list) else last] = value
    return rec


DELETE = object()
BEST = {"epoch": 3, "val_error": 1.2, "test_error": 1.3, "train_error": 0.2}

# (field changed, new value, the field the warning must name)
BAD = [
    ("config", DELETE, "config"), ("config", [1], "config"),
    ("config.dataset", DELETE, "config.dataset"), ("config.dataset", "mnist", "config.dataset"),
    ("config.dataset.name", DELETE, "config.dataset.name"), ("config.dataset.name", 3, "config.dataset.name"),
    ("config.dataset.name", "", "config.dataset.name"),
    ("config.dataset.name", "imagenet", "config.dataset.classes"),   # unknown set, no classes given
    ("config.dataset.classes", 1, "config.dataset.classes"), ("config.dataset.classes", "10", "config.dataset.classes"),
    ("config.model", DELETE, "config.model"), ("config.model.name", None, "config.model.name"),
    ("config.method", DELETE, "config.method"), ("config.method.name", ["dfa"], "config.method.name"),
    ("config.reg", DELETE, "config.reg"), ("config.reg", None, "config.reg"),
    ("config.reg.name", DELETE, "config.reg.name"),
    ("config.seeds", DELETE, "config.seeds"), ("config.seeds", [], "config.seeds"),
    ("config.seeds", [0, 0, 1], "config.seeds"), ("config.seeds", [0, -1], "config.seeds"),
    ("config.seeds", "0,1,2", "config.seeds"), ("config.seeds", [1, 2], "seed"),   # seed 0 not asked for
    ("config.profile", DELETE, "config.profile"), ("config.profile", 1, "config.profile"),
    ("config.profile", "paper\n\\end{tabular}", "config.profile"), ("row", "2x800\nTanh", "row"),
    ("config.method.name", "new\n| rule", "config.method.name"),  # a column header of its own (tables)
    ("config.max_epochs", DELETE, "config.max_epochs"), ("config.max_epochs", 0, "config.max_epochs"),
    ("config.max_epochs", 20.0, "config.max_epochs"), ("config.max_epochs", True, "config.max_epochs"),
    ("config.freeze_first_epochs", -1, "config.freeze_first_epochs"),
    ("config.freeze_first_epochs", "3", "config.freeze_first_epochs"),
    ("row", DELETE, "row"), ("row", "", "row"), ("row", 7, "row"),
    ("key", DELETE, "key"), ("key", None, "key"),
    ("seed", DELETE, "seed"), ("seed", "0", "seed"), ("seed", True, "seed"), ("seed", 0.0, "seed"),
    ("stop", DELETE, "stop"), ("stop", "done", "stop"), ("stop", None, "stop"),
    ("epochs", DELETE, "epochs"), ("epochs", 0, "epochs"), ("epochs", 21, "epochs"),   # max_epochs is 20
    ("epochs", 6, "history"),                                                         # 7 history rows
    ("train_error", DELETE, "train_error"), ("train_error", None, "train_error"),    # converged: needs both
    ("test_error", None, "test_error"), ("test_error", "1.5", "test_error"),
    ("test_error", -0.1, "test_error"), ("test_error", 100.5, "test_error"), ("test_error", math.inf, "test_error"),
    ("test_error", math.nan, "test_error"), ("test_error", False, "test_error"),
    ("best_val", [1.3], "best_val"), ("best_val", {**BEST, "epoch": 8}, "best_val.epoch"),
    ("best_val", {**BEST, "test_error": None}, "best_val.test_error"),
    ("best_val", {k: v for k, v in BEST.items() if k != "val_error"}, "best_val.val_error"),
    ("best_val", {**BEST, "train_error": "0.2"}, "best_val.train_error"),
    ("history", DELETE, "history"), ("history", [], "history"), ("history", {}, "history"),
    ("history.0", [1, 50.0], "history[0]"), ("history.0.epoch", 2, "history[0].epoch"),
    ("history.3.epoch", DELETE, "history[3].epoch"), ("history.3.epoch", True, "history[3].epoch"),
    ("history.6.train_error", None, "history[6].train_error"),
    ("history.2.test_error", "40", "history[2].test_error"),
    ("history.2.val_error", 101, "history[2].val_error"),
]


BAD_IDS = [f"{d}=<deleted>" if v is DELETE else f"{d}={v!r}" for d, v, _ in BAD]  # stable across runs


@pytest.mark.parametrize("dotted,value,named", BAD, ids=BAD_IDS)
def test_every_bad_field_is_skipped_with_one_line_naming_the_file_and_the_field(tmp_path, capsys, dotted, value,
                                                                              named):
    # a row outside the paper's tables: its config is only what every record has (no dataset.classes)
    got, err = read_one(tmp_path, _set(record(row="3x50 Tanh"), dotted, value), capsys)
    assert got == []
    assert err.splitlines() == [err.strip()] and err.startswith(f"warning: skipping {tmp_path / 'r.json'}: {named}: ")


def test_a_diverged_seed_must_have_no_errors_and_no_best_val(tmp_path, capsys):
    diverged = record(stop="diverged", train=None, test=None)
    assert read_one(tmp_path, diverged, capsys)[0][0].result.test_error is None
    for field, value in (("test_error", 1.5), ("train_error", 0.1), ("best_val", BEST)):
        got, err = read_one(tmp_path, _set(diverged, field, value), capsys)
        assert got == [] and f": {field}: " in err


def test_a_valid_record_reads_with_defaults_for_later_settings(tmp_path, capsys):
    rec = record(best_val=BEST, seeds=(0, 4))
    assert "freeze_first_epochs" not in rec["config"]  # a record from before that setting existed
    (r,), err = read_one(tmp_path, rec, capsys)
    assert err == ""
    assert (r.dataset, r.classes, r.row, r.method, r.reg, r.seeds, r.freeze) == \
        ("mnist", 10, "2x800 Tanh", "dfa", "none", (0, 4), 0)
    assert r.result == (0.2, 1.3) and (r.train_error, r.test_error) == (0.0, 1.5)  # the epoch chosen on validation; the last
    assert len(r.history) == r.epochs == 7 and r.path == tmp_path / "r.json"


# --- the shared definitions -------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,classes,train,stop,expected", [
    ("mnist", None, 80.99, "max_epochs", True), ("mnist", None, 81.0, "max_epochs", False),
    ("cifar100", None, 89.0, "max_epochs", True), ("cifar100", None, 89.2, "max_epochs", False),
    ("synthetic", 5, 71.9, "converged", True), ("synthetic", 5, 72.0, "converged", False),
    ("mnist", None, None, "diverged", False)])
def test_a_seed_learned_below_90_percent_of_chance_and_not_diverged(tmp_path, capsys, dataset, classes, train,
                                                                     stop, expected):
    rec = record(dataset=dataset, train=train, test=None if train is None else 50.0, stop=stop)
    if classes:
        rec["config"]["dataset"]["classes"] = classes
    (r,), _ = read_one(tmp_path, rec, capsys)
    assert r.learned is expected


def test_the_largest_budget_then_most_seeds_then_first_key_fill_a_cell_whatever_the_file_order(tmp_path):
    recs = [record(key="b", seed=0, max_epochs=20), record(key="a", seed=0, max_epochs=20),
            record(key="c", seed=0, max_epochs=20), record(key="c", seed=1, max_epochs=20),
            record(key="long", seed=0, max_epochs=30), record(key="long", seed=1, max_epochs=30),
            record(key="short", seed=0, max_epochs=3), record(key="short", seed=1, max_epochs=3),
            record(key="short", seed=2, max_epochs=3)]
    for order in (recs, recs[::-1]):
        for i, rec in enumerate(order):
            store.write(tmp_path / f"{i:02}.json", rec)
        assert [(r.key, r.seed) for r in records.fill(records.read([tmp_path]))] == [("long", 0), ("long", 1)]
        without_long = [r for r in records.read([tmp_path]) if r.key != "long"]
        assert {r.key for r in records.fill(without_long)} == {"c"}                # more seeds run
        assert {r.key for r in records.fill(r for r in without_long if r.key in "ab")} == {"a"}  # tie: first key


def test_summary_counts_seeds_epochs_and_stop_reasons(tmp_path):
    recs = [record(seed=0, test=1.0, stop="max_epochs", seeds=(0, 1)), record(seed=1, test=2.0, seeds=(0, 1)),
            record(seed=3, stop="diverged", train=None, test=None, seeds=(2, 3), epochs=3),
            record(seed=2, train=85.0, test=80.0, seeds=(2, 3), stop="schedule_end")]
    for i, rec in enumerate(recs):
        store.write(tmp_path / f"{i}.json", rec)
    s = records.summary(records.fill(records.read([tmp_path])))
    assert (s["seeds_learned"], s["seeds_run"], s["seeds_asked"]) == (2, 4, 4)  # two jobs: seeds 0-3
    assert (s["test_mean"], s["test_std"], s["train_mean"]) == (1.5, pytest.approx(math.sqrt(0.5)), 0.0)
    assert s["epochs_mean"] == (7 + 7 + 3 + 7) / 4
    assert s["stop"] == "converged:1 max_epochs:1 schedule_end:1 diverged:1"


def test_tables_and_figures_agree_on_the_same_cell(tmp_path, capsys):
    runs = tmp_path / "runs"
    # 100 layers: BP stuck at chance (train 89.4%, the committed deep.md's case), DFA learns
    for seed in range(3):
        store.write(runs / f"bp{seed}.json", record(row="100x240 Tanh", method="bp", seed=seed, train=89.4 + seed / 10,
                                                    test=89.5, stop="max_epochs", key="bp"))
        store.write(runs / f"dfa{seed}.json", record(row="100x240 Tanh", method="dfa", seed=seed, train=0.1,
                                                     test=3.9 + seed / 10, key="dfa"))
    store.write(runs / "dfa_short.json", record(row="100x240 Tanh", method="dfa", seed=0, max_epochs=2,
                                                test=50.0, key="short"))
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "t"), "--tables", "1"]) == 0
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "f"), "--only", "deep"]) == 0
    table = pd.read_csv(tmp_path / "t" / "table1.csv").set_index(["row", "method"]).loc["100x240 Tanh"]
    deep = pd.read_csv(tmp_path / "f" / "deep.csv").set_index("method")
    for column in ("seeds_learned", "seeds_run", "seeds_asked", "test_mean", "test_std", "epochs_mean", "stop"):
        for method in ("bp", "dfa"):
            a, b = table.loc[method, column], deep.loc[method, column]
            assert (a == b) or (pd.isna(a) and pd.isna(b)), (method, column, a, b)
    assert table.loc["bp", "seeds_learned"] == 0 and table.loc["dfa", "test_mean"] == pytest.approx(4.0)
    shown = {line.split("|")[2].strip(): line for line in (tmp_path / "f" / "deep.md").read_text().splitlines()
             if line.startswith("| 100x240")}
    assert "| 0/3 " in shown["BP"] and "| —  " in shown["BP"] and "max_epochs:3" in shown["BP"]
    assert "| 3/3 " in shown["DFA"] and "4.00 ± 0.10" in shown["DFA"]


def test_records_the_runner_writes_read_back_whole(make_cfg, monkeypatch, capsys):
    from dfarun.config import schema as config
    from dfarun.run.runner import run_records

    monkeypatch.setattr(config, "VAL_SIZE", 100)  # val=true on the tiny synthetic set
    cfgs = [make_cfg("model=3x50_tanh", "seeds=[0,1]"),
            make_cfg("model=3x50_tanh", "method=bp", "reg=dropout", "val=true", "schedule=auto",
                     "track_alignment=true", "align_every=2", "freeze_first_epochs=1")]
    written = [rec for cfg in cfgs for rec in run_records(cfg)]
    capsys.readouterr()
    got = {(r.key, r.seed): r for r in records.read([cfgs[0].store])}
    assert capsys.readouterr().err == ""                          # not one of them is skipped
    assert len(got) == len(written) == 3
    for rec in written:
        r = got[(rec["key"], rec["seed"])]
        assert (r.epochs, r.stop, r.result.test_error) == (rec["epochs"], rec["stop"], rec.get("best_val", rec)["test_error"])
        assert r.to_dict() == rec  # the writer's record is the model's
    assert sorted((r.row, r.freeze) for r in got.values()) == [("3x50 Tanh", 0), ("3x50 Tanh", 0), ("3x50 Tanh + DO", 1)]


def test_the_writer_builds_the_same_model_the_readers_read():
    """provenance.record builds its record with Record.new: a field the format does not have,
    or a value a reader would skip, fails where it is written, not where it is read."""
    from dfarun.run.record import Invalid, parse

    rec = record(best_val=BEST)
    fields = {k: v for k, v in rec.items()}
    built = Record.new(**fields)
    assert built == parse(rec) and {k: v for k, v in built.to_dict().items() if k in rec} == rec
    assert list(built.to_dict())[:4] == ["format", "key", "row", "config"] and list(built.to_dict())[-1] == "history"
    assert "best_val" not in Record.new(**{**fields, "best_val": None}).to_dict()  # none: left out, not null
    with pytest.raises(TypeError, match="not fields of a record: test_eror"):
        Record.new(**fields, test_eror=1.0)
    with pytest.raises(Invalid, match=r"^history\[2\]\.test_error: "):
        Record.new(**{**fields, "history": [*rec["history"][:2], {**rec["history"][2], "test_error": 140.0},
                                            *rec["history"][3:]]})
