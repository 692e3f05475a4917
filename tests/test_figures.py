"""Figures from hand-made records, the frozen-layer experiment, and saved weights."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from dfarun.report import figures
from dfarun.report import cells as protocol
from dfarun.report import records
from dfarun.run import store
from dfarun.report import tables
from dfarun.engine.rules import RULES
from dfarun.run.runner import run_records
from dfarun.engine.state import init_state
from dfarun.engine.train import Protocol, fit

from helpers import paper_settings, write_mnist


def record(model, method, seed, epochs=4, freeze=0, key=None, stop="max_epochs"):
    history = [{"epoch": k, "train_error": 50.0 / k + seed, "test_error": 40.0 / k + seed,
                "train_loss": 1.0 / k, "seconds": 1.0} for k in range(1, epochs + 1)]
    size, activation = model.split("_")
    return {"format": store.FORMAT, "key": key or f"{model}-{method}-{freeze}", "seed": seed,
            "row": f"{size} {activation.capitalize()}",  # the paper's label, as runner.row_label gives
            "stop": stop, "epochs": epochs, "train_error": history[-1]["train_error"],
            "test_error": history[-1]["test_error"], "history": history,
            "config": paper_settings({"dataset": {"name": "mnist"}, "model": {"name": model}, "method": {"name": method},
                                      "reg": {"name": "none"}}, f"{size} {activation.capitalize()}", freeze > 0)
            | {"seeds": [0, 1], "max_epochs": epochs, "profile": "quick", "freeze_first_epochs": freeze}}


def test_figures_render_from_records_and_name_what_is_missing(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for method in ("bp", "fa", "dfa"):
            store.write(runs / f"a_{method}_{seed}.json", record("2x800_tanh", method, seed))
        for method in ("bp", "dfa_first"):
            store.write(runs / f"b_{method}_{seed}.json", record("3x50_tanh", method, seed, epochs=6, freeze=3))
        store.write(runs / f"c_{seed}.json", record("4x100_tanh", "ifa", seed))
    store.write(runs / "short.json", record("2x800_tanh", "dfa", 0, epochs=2, key="shorter-budget"))
    out = tmp_path / "figs"
    assert figures.main(["--store", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("fig2_right.png", "fig2_right.csv", "fig2_left.png", "fig2_left.csv", "ifa.md", "ifa.csv"):
        assert (out / name).stat().st_size > 0
    assert "fig3: missing records; run: dfarun -m experiment=fig3" in printed
    assert "deep: missing records; run: dfarun -m experiment=deep" in printed
    curves = pd.read_csv(out / "fig2_right.csv")
    dfa = curves[curves.method == "dfa"]
    assert list(dfa.epoch) == [1, 2, 3, 4] and list(dfa.seeds) == [2] * 4  # the 4-epoch experiment
    assert dfa.train_mean.iloc[0] == 50.5 and dfa.train_min.iloc[0] == 50 and dfa.train_max.iloc[0] == 51
    ifa = (out / "ifa.md").read_text()
    assert "3.9% (train 0%)" in ifa and "10.50 ± 0.71" in ifa  # 40/4 + seed over seeds 0, 1


def test_a_figure_with_some_methods_says_which_it_lacks_and_whose_seeds_are_whose(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(2):
        store.write(runs / f"bp_{seed}.json", record("2x800_tanh", "bp", seed))
    store.write(runs / "dfa_0.json", record("2x800_tanh", "dfa", 0, key="one-seed"))
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs"), "--only", "fig2_right"]) == 0
    assert "dfarun-figures: note: fig2_right: no records of FA: drawn without them" in capsys.readouterr().err
    assert figures.main(["--store", str(runs), "--only", "fig2_right"]) == 0  # without --out: beside the store
    assert (runs / "figures" / "fig2_right.png").is_file()
    by_method = figures.select(records.read([runs]), "2x800 Tanh", ("bp", "fa", "dfa"))
    assert figures.budget(by_method) == "seeds: BP 2, DFA 1, at most 4 epochs"
    assert figures.budget({"bp": by_method["bp"]}) == "2 seeds, at most 4 epochs"


def test_a_figures_own_row_is_held_to_its_experiments_settings(tmp_path, capsys):
    """IFA's 4x100 row is in no table: a run of it with another rate and more seeds must not
    win over the experiment's own (by seeds it would); a shorter frozen phase and fewer
    epochs are a figure's budget, which its title states, and still draw Figure 2 (left)."""
    runs = tmp_path / "runs"
    for seed in range(2):
        store.write(runs / f"ifa_{seed}.json", record("4x100_tanh", "ifa", seed))
        for method in ("bp", "dfa_first"):
            store.write(runs / f"f_{method}_{seed}.json", record("3x50_tanh", method, seed, epochs=6, freeze=3))
    for seed in range(4):
        fast = record("4x100_tanh", "ifa", seed, key="fast")
        fast["config"] |= {"lr": 1e-2, "seeds": [0, 1, 2, 3]}
        fast["test_error"] = 55.0
        store.write(runs / f"fast_{seed}.json", fast)
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs"), "--only", "ifa,fig2_left"]) == 0
    err = capsys.readouterr().err
    assert "mnist 4x100 Tanh IFA: records with other settings than the paper's cell left out (lr=0.01)" in err
    ifa = (tmp_path / "figs" / "ifa.md").read_text()
    assert "2/2" in ifa and "55.00" not in ifa
    assert (tmp_path / "figs" / "fig2_left.png").is_file()
    assert tables.main(["--store", str(runs), "--tables", "1"]) == 2  # no table's cells here...
    assert "4x100" not in capsys.readouterr().err  # ...and no note about a figure's row

    # Figure 2 (left): the longest frozen phase is chosen (a key sorting first, freeze 2, is not);
    # one longer than the experiment's 50, or one the run never leaves, is no budget
    for seed in range(2):
        store.write(runs / f"g_{seed}.json", record("3x50_tanh", "bp", seed, epochs=6, freeze=2, key="a-freeze"))
        store.write(runs / f"h_{seed}.json", record("3x50_tanh", "bp", seed, epochs=80, freeze=60, key="long"))
        store.write(runs / f"i_{seed}.json", record("3x50_tanh", "bp", seed, epochs=6, freeze=6, key="never"))
    kept, off = protocol.split(records.read([runs]))
    assert off[("mnist", "3x50 Tanh", "bp")] == {
        "freeze_first_epochs=60 (the cell's is 50, and the layer must be released before the last epoch, 80)",
        "freeze_first_epochs=6 (the cell's is 50, and the layer must be released before the last epoch, 6)"}
    bp = records.cells(kept)[("mnist", "3x50 Tanh", "bp", True)]
    assert {r.freeze for r in bp} == {3}


def test_frozen_first_layer_does_not_move_then_learns(toy_data):
    state = init_state([0, 1], [12, 8, 8, 3], "tanh", RULES["dfa_first"], torch.device("cpu"))
    before = [p.clone() for p in state.net.params]
    seen = []
    fit(state, toy_data, RULES["dfa_first"], Protocol(1e-2, 32, 4, freeze_first=2),
        on_epoch=lambda s: seen.append([p.clone() for p in s.net.params]))
    first = (0, len(state.net.weights))  # W_1 and b_1 in params order
    for epoch, params in enumerate(seen, start=1):
        for k in first:
            assert torch.equal(params[k], before[k]) == (epoch <= 2), (epoch, k)
        assert not torch.equal(params[1], before[1])  # the layers above learn all along


def test_dfa_first_is_bp_above_and_direct_feedback_below():
    from dfarun.engine.nets import Pass
    torch.manual_seed(0)
    sizes = [10, 6, 6, 6, 3]
    state = init_state([0], sizes, "tanh", RULES["dfa_first"], torch.device("cpu"))
    B = state.feedback
    e = torch.randn(1, 5, 3)
    dfs = [torch.rand(1, 5, 6) for _ in range(3)]
    p = Pass([], dfs, None)  # the rules see f'(a) only through the network's local step
    ours, bp = (RULES[m].signals(e, state.net, p, fb) for m, fb in (("dfa_first", B), ("bp", [])))
    torch.testing.assert_close(ours[0], e @ B[0])
    for a, b in zip(ours[1:], bp[1:]):
        torch.testing.assert_close(a, b)


def test_save_weights_writes_each_seeds_final_network(make_cfg):
    cfg = make_cfg("model=3x50_tanh", "method=dfa", "seeds=[0,1]", "save_weights=true")
    records = run_records(cfg)
    for rec in records:
        saved = torch.load(store.record_path(cfg, rec["seed"]).with_suffix(".pt"), weights_only=True)
        assert [tuple(w.shape) for w in saved["weights"]] == [(50, 16), (50, 50), (50, 50), (10, 50)]
        assert saved["activation"] == "tanh"
    a, b = (torch.load(store.record_path(cfg, s).with_suffix(".pt"), weights_only=True) for s in (0, 1))
    assert not torch.equal(a["weights"][0], b["weights"][0])


def test_fig3_embeds_each_layer_of_saved_networks(tmp_path, capsys, monkeypatch):
    import numpy as np

    from dfarun.engine.nets import MLP, layer_sizes, sample_layers

    rng = np.random.default_rng(0)
    write_mnist(tmp_path / "data", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40),
                rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60))
    runs = tmp_path / "runs"
    for method in ("bp", "dfa"):
        rec = record("3x400_tanh", method, 0)
        rec["config"]["dataset"].update(classes=10, lr=1e-4, train_size=None)
        store.write(runs / f"{method}.json", rec)
        W, b = sample_layers(layer_sizes(784, 3, 400, 10), torch.Generator().manual_seed(1))
        store.save_weights(runs / f"{method}.pt", MLP([w[None] for w in W], [x[None] for x in b], "tanh"))
    out = tmp_path / "figs"
    monkeypatch.setenv("DFARUN_DATA_DIR", str(tmp_path / "nowhere"))  # dfarun's data_dir, and so the default
    assert figures.main(["--store", str(runs), "--out", str(out), "--only", "fig3"]) == 0
    said = capsys.readouterr().out  # the records are there: it needs the test images, not a run
    assert f"fig3: not drawn: its records are there; it embeds MNIST's test images, which {tmp_path / 'nowhere'} " \
           "does not hold: rerun with --data-dir" in said
    assert "missing records" not in said
    monkeypatch.setenv("DFARUN_DATA_DIR", str(tmp_path / "data"))
    assert figures.main(["--store", str(runs), "--out", str(out), "--only", "fig3"]) == 0
    points = pd.read_csv(out / "fig3.csv")
    assert (out / "fig3.png").stat().st_size > 0
    assert sorted(set(zip(points.method, points.layer))) == [(m, k) for m in ("bp", "dfa") for k in range(4)]
    assert len(points) == 2 * 4 * 60  # every test image, in the input and each hidden layer

    (runs / "dfa.pt").unlink()  # a clone: the records are in git, the weights are not
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs2"), "--only", "fig3",
                         "--data-dir", str(tmp_path / "data")]) == 0
    said = capsys.readouterr().out
    assert "fig3: not drawn: its records are there, the final weights of DFA (<record>.pt) are not: rerun " \
           "`dfarun -m experiment=fig3 force=true`" in said and "missing records" not in said


# --- hostile records and weights: one warning line each, never a traceback -----------------------

def _broken(rec, change):
    change(rec)
    return rec


def test_figures_skip_broken_records_with_one_line_naming_the_field(tmp_path, capsys):
    runs = tmp_path / "runs"
    for method in ("bp", "fa", "dfa"):
        store.write(runs / f"ok_{method}.json", record("2x800_tanh", method, 0))
    broken = {  # each a 100x240 record that, if read, would make the `deep` table
        "no_reg": (lambda r: r["config"].pop("reg"), "config.reg: missing"),
        "empty_history": (lambda r: r.update(history=[]), "history: []"),
        "null_errors": (lambda r: r.update(train_error=None, test_error=None), "train_error: None"),
        "converged_null_test": (lambda r: r.update(test_error=None, stop="converged"), "test_error: None"),
        "history_null_error": (lambda r: r["history"][1].update(test_error=None), "history[1].test_error: None"),
        "history_short": (lambda r: r["history"].pop(), "history: "),
        "model_list": (lambda r: r["config"].update(model=["100x240_tanh"]), "config.model: "),
    }
    for i, (name, (change, _)) in enumerate(broken.items()):
        rec = _broken(record("100x240_tanh", "bp", 0, key=f"k{i}"), change)
        (runs / f"{name}.json").write_text(json.dumps(rec))
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs")]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "deep: missing records" in out and "fig2_right: " in out
    lines = err.splitlines()
    assert len(lines) == len(broken)
    for name, (_, field) in broken.items():
        assert sum(line.startswith(f"warning: skipping {runs / name}.json: {field}") for line in lines) == 1, name


def test_a_diverged_seed_shows_as_such_and_no_cell_shows_nan(tmp_path, capsys):
    runs = tmp_path / "runs"
    store.write(runs / "dfa0.json", record("100x240_tanh", "dfa", 0))
    diverged = record("100x240_tanh", "dfa", 1)
    diverged.update(stop="diverged", train_error=None, test_error=None)
    store.write(runs / "dfa1.json", diverged)
    store.write(runs / "bp0.json", _broken(record("100x240_tanh", "bp", 0),
                                           lambda r: r.update(stop="converged", test_error=None)))
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs"), "--only", "deep"]) == 0
    deep = (tmp_path / "figs" / "deep.md").read_text()
    assert "| DFA      | 1/2 " in deep and "max_epochs:1 diverged:1" in deep and "| 10.00 n=1 " in deep  # one seed: no std
    assert "| BP " not in deep and "nan" not in deep.lower()
    assert tables.main(["--store", str(runs), "--out", str(tmp_path / "t"), "--tables", "1", "--compare"]) == 0
    out, err = capsys.readouterr()
    assert "nan" not in out.lower() and "10.00% (12.50%) n=1 demo" in out  # 4 epochs of 300
    assert err.count("warning: skipping") == 2 and "bp0.json: test_error: None" in err  # once per tool


def test_fig3_skips_unreadable_or_misshapen_weights_with_a_warning(tmp_path, capsys):
    from dfarun.engine.nets import MLP, layer_sizes, sample_layers

    runs = tmp_path / "runs"
    for method in ("bp", "dfa"):
        store.write(runs / f"{method}.json", record("3x400_tanh", method, 0))
    (runs / "bp.pt").write_bytes(b"\x89PNG not torch")
    W, b = sample_layers(layer_sizes(100, 3, 400, 10), torch.Generator().manual_seed(1))  # 100 inputs, not 784
    store.save_weights(runs / "dfa.pt", MLP([w[None] for w in W], [x[None] for x in b], "tanh"))
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs"), "--only", "fig3",
                         "--data-dir", str(tmp_path / "no-data")]) == 0
    out, err = capsys.readouterr()
    assert "fig3: missing records" in out and "Traceback" not in err
    assert err.splitlines() == [f"warning: skipping {runs / 'bp.pt'}: unreadable weights (UnpicklingError)",
                                f"warning: skipping {runs / 'dfa.pt'}: weights[0]: expected a float matrix "
                                f"with 784 columns"]


def test_saved_mlp_names_what_is_wrong(tmp_path):
    from dfarun.engine.nets import layer_sizes, sample_layers

    W, b = sample_layers(layer_sizes(6, 2, 5, 3), torch.Generator().manual_seed(0))
    good = {"weights": W, "biases": b, "activation": "tanh"}
    assert figures.saved_mlp(_pt(tmp_path, good), 6).forward(torch.rand(1, 4, 6)).a_y.shape == (1, 4, 3)
    for change, why in ((dict(activation="swish"), "activation: 'swish'"), (dict(biases=b[:-1]), "weights, biases"),
                        (dict(weights=[W[0], W[0], W[2]]), "weights[1]"), (dict(biases=[b[0], b[2], b[1]]), "biases[1]"),
                        (dict(arch={"channels": [8]}), "not the weights of an MLP")):
        with pytest.raises(ValueError, match=re.escape(why)):
            figures.saved_mlp(_pt(tmp_path, {**good, **change}), 6)


def _pt(tmp_path, obj):
    torch.save(obj, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_figures_cli_refuses_bad_options_and_unwritable_outputs_in_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    for method in ("bp", "fa", "dfa"):
        store.write(runs / f"{method}.json", record("2x800_tanh", method, 0))
    for only in ("nope", "", "fig2_right,nope"):
        assert figures.main(["--store", str(runs), "--only", only]) == 2
        assert f"--only={only!r}: expected a comma-separated subset of fig2_right,fig2_left" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "file"), "--only", "fig2_right"]) == 2
    assert f"fig2_right: {tmp_path / 'file'}: File exists" in capsys.readouterr().err
    (tmp_path / "figs" / "fig2_right.png").mkdir(parents=True)
    assert figures.main(["--store", str(runs), "--out", str(tmp_path / "figs"), "--only", "fig2_right"]) == 2
    err = capsys.readouterr().err
    assert f"fig2_right: {tmp_path / 'figs' / 'fig2_right.png'}: a folder is in the way" in err
    assert "Traceback" not in err and sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig2_right.png"]

