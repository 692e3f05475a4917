"""A researcher's sweep read with `dfarun-tables --by` and `dfarun-figures curves --by`: the
footer lists what they changed (the effective rate, not the data set's default), a demo says
its budget, the Markdown leaves out columns that tell nothing, a --where view has files of
its own, and the curves figure has a panel per value of the first key, a colour per value of
the rest (the same in each panel) and its legend outside the panels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from dfarun.report import curves, figures, groups, records, tables
from dfarun.run import store

from helpers import record

RATES = (1e-4, 1e-3)


def sweep_record(method: str, lr: float, seed: int, test: float = 5.0, max_epochs: int = 5, **extra) -> dict:
    """One seed of the sweep: MNIST 1x800 tanh on 20,000 images, `lr` overriding the data set's
    1e-4 (the record keeps the effective rate in `lr`), stopped by its short epoch budget."""
    rec = record(row="1x800 Tanh", method=method, seed=seed, test=test, train=test / 2, stop="max_epochs",
                 max_epochs=max_epochs, epochs=max_epochs, key=f"{method}-{lr}-{max_epochs}", **extra)
    rec["config"]["dataset"]["train_size"] = 20000
    rec["config"]["lr"] = lr
    return rec


@pytest.fixture
def sweep(tmp_path):
    runs = tmp_path / "runs"
    for method in ("bp", "dfa"):
        for lr in RATES:
            for seed in range(3):
                store.write(runs / f"{method}-{lr}-{seed}.json", sweep_record(method, lr, seed, test=3.0 + seed))
    return runs


def by(runs, out, *args) -> int:
    return tables.main(["--store", str(runs), "--out", str(out), *args])


def test_the_footer_lists_what_a_user_changed_and_a_demo_says_its_budget(sweep, tmp_path, capsys):
    assert by(sweep, tmp_path / "out", "--by", "method.name,lr") == 0
    md = (tmp_path / "out" / "by_method.name+lr.md").read_text()
    # dataset.lr (the default lr overrode), dataset.classes, model.width, ...: what the options' files set
    assert ("- Every record here shares: dataset.name=mnist, dataset.train_size=20000, max_epochs=5, "
            "model.name=1x800_tanh.\n") in md
    assert "demo: stopped at max_epochs=5, short of the protocol's 300 epochs, before converging." in md
    assert "no distance from the paper" not in md
    assert md.startswith("### Test error by method.name, lr (demo): mean ± std over seeds (12 records, 4 groups)")
    assert "| max_epochs ×3 |" in md and "max_epochs:3" not in md  # a count, not a setting
    assert pd.read_csv(tmp_path / "out" / "by_method.name+lr.csv").stop.tolist() == ["max_epochs:3"] * 4


def test_a_changed_data_set_rate_is_listed_and_lr_only_where_it_differs_from_it(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(2):
        rec = sweep_record("dfa", 3e-4, seed)
        rec["config"]["dataset"]["lr"] = 3e-4  # dataset.lr=3e-4 on the command line: lr = 3e-4 too
        store.write(runs / f"r{seed}.json", rec)
    assert by(runs, tmp_path / "out", "--by", "method.name") == 0
    shares = next(line for line in capsys.readouterr().out.splitlines() if "Every record here shares" in line)
    assert "dataset.lr=0.0003" in shares and "lr=" not in shares.replace("dataset.lr=", "")  # lr: the data set's
    for seed in range(2):
        rec = sweep_record("dfa", 1e-3, seed)
        rec["config"]["dataset"]["lr"] = 3e-4  # and lr=1e-3 besides: the rate that ran is listed too
        store.write(runs / f"r{seed}.json", rec)
    assert by(runs, tmp_path / "out", "--by", "method.name") == 0
    shares = next(line for line in capsys.readouterr().out.splitlines() if "Every record here shares" in line)
    assert "dataset.lr=0.0003" in shares and "lr=0.001" in shares


def test_markdown_leaves_out_silent_columns_and_the_csv_keeps_them(sweep, tmp_path, capsys):
    assert by(sweep, tmp_path / "out", "--by", "method.name,lr") == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| method.name"))
    assert "shared settings" not in header and "experiments" not in header
    assert "shared settings" not in (tmp_path / "out" / "by_method.name+lr.tex").read_text()
    csv = pd.read_csv(tmp_path / "out" / "by_method.name+lr.csv")
    assert {"experiments", "shared"} <= set(csv.columns) and csv.experiments.tolist() == [1] * 4
    # a group of two experiments (5 and 20 epochs): the count says so, and what differs is shown
    store.write(sweep / "longer.json", sweep_record("bp", 1e-4, 0, max_epochs=20))
    assert by(sweep, tmp_path / "out", "--by", "method.name") == 0
    md = (tmp_path / "out" / "by_method.name.md").read_text().splitlines()
    dfa = next(line for line in md if line.startswith("| dfa"))
    assert "experiments" in md[2] and "max_epochs=5" in dfa  # its seeds share what bp's do not
    assert pd.read_csv(tmp_path / "out" / "by_method.name.csv").experiments.tolist() == [3, 2]


def test_where_views_have_files_of_their_own_and_the_csv_says_the_filter(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert by(sweep, out, "--by", "lr", "--where", "method.name=dfa") == 0
    assert by(sweep, out, "--by", "lr", "--where", "method.name=bp", "--where", "lr=1e-4") == 0
    printed = capsys.readouterr().out
    dfa, bp = out / "by_lr+where_method.name=dfa.csv", out / "by_lr+where_method.name=bp+where_lr=0.0001.csv"
    assert pd.read_csv(dfa)["method.name"].tolist() == ["dfa", "dfa"] and list(pd.read_csv(dfa).lr) == list(RATES)
    assert pd.read_csv(bp)["method.name"].tolist() == ["bp"] and list(pd.read_csv(bp).columns)[:2] == ["lr", "method.name"]
    # where it wrote, as dfarun-figures says it
    assert f"tables: {out / 'by_lr+where_method.name=dfa.md'}, " in printed and f"{bp}" in printed
    assert figures.main(["curves", "--store", str(sweep), "--by", "lr", "--where", "method.name=dfa",
                         "--out", str(out)]) == 0
    data = pd.read_csv(out / "curves_by_lr+where_method.name=dfa.csv")
    assert set(data["method.name"]) == {"dfa"}


def test_a_path_separator_in_a_filter_value_is_replaced_in_the_file_name():
    assert groups.stem("by_", ["lr"], {"model.label": "a/b"}) == "by_lr+where_model.label=a_b"


def test_curves_have_a_panel_per_first_key_a_colour_per_rest_and_the_legend_outside(sweep):
    recs = records.read([sweep])
    by = ["method.name", "lr"]
    data = curves.table({", ".join(vals): rs for vals, rs in groups.group(recs, by).items()}, "group")
    fig = curves.draw(recs, by, data)
    try:
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == ["method.name=bp", "method.name=dfa"]
        assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])
        # the same rate, the same colour in each panel: per panel, the colours of its solid (test) lines
        colours = [[line.get_color() for line in ax.get_lines() if line.get_linestyle() == "-"] for ax in panels]
        assert colours[0] == colours[1] and len(set(colours[0])) == len(RATES)
        legend = panels[-1].get_legend()
        words = [t.get_text() for t in legend.get_texts()]
        assert words[:2] == ["lr=0.0001", "lr=0.001"]
        assert "test" in words and "train (on batches, as trained)" in words
        assert sum("train" in w for w in words) == 1  # the styles said once, not per group
        box, axes_box = legend.get_window_extent(), panels[-1].get_window_extent()
        assert box.x0 >= axes_box.x1  # beside the panels, over no curve
        title = fig._suptitle.get_text()
        assert "Learning curves by method.name, lr (demo): 4 groups × 3 seeds, at most 5 epochs" in title
        assert "dataset.train_size=20000" in title and "demo: 5 of 300 epochs" in title
        assert "dataset.lr" not in title
    finally:
        plt.close(fig)


def test_curves_of_one_key_is_one_panel_and_a_group_that_is_no_demo_is_not_called_one(sweep):
    store.write(sweep / "full.json", sweep_record("bp", 3e-3, 0, max_epochs=300))
    recs = records.read([sweep])
    data = curves.table({", ".join(v): rs for v, rs in groups.group(recs, ["lr"]).items()}, "group")
    fig = curves.draw(recs, ["lr"], data)
    try:
        assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
        title = fig._suptitle.get_text()
        assert "(demo)" not in title and "demo (2 of 3 groups): 5 of 300 epochs" in title
        assert "3 groups × 1-6 seeds, at most 5-300 epochs" in title
    finally:
        plt.close(fig)
