"""`dfarun-figures`: the paper's figures, and the IFA and 100-layer results, from run records.

    dfarun-figures --store runs [--out runs/figures] [--data-dir DIR]
    dfarun-figures curves --store runs --by KEYS     (learning curves of any store: curves.py)

Each figure whose records exist is written as PNG plus the CSV of the numbers behind it;
for the others it says which experiment to run. Every figure states the seeds and epoch
budget that produced it, since a laptop run is usually shorter than the paper's. Only
Figure 3 needs torch (its saved networks), and imports it when drawn.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from dfarun import atomic  # noqa: E402
from dfarun.config.schema import default_data_dir  # noqa: E402
from dfarun.errors import DfarunError, interrupted  # noqa: E402
from dfarun.report import cells as protocol  # noqa: E402
from dfarun.report import curves as curve  # noqa: E402
from dfarun.report import records  # noqa: E402
from dfarun.report.text import error_text, markdown  # noqa: E402
from dfarun.run.record import Record  # noqa: E402

NAMES = {"bp": "BP", "fa": "FA", "dfa": "DFA", "ifa": "IFA", "dfa_first": "DFA (first layer)"}
COLORS = {"bp": "tab:blue", "fa": "tab:orange", "dfa": "tab:green", "dfa_first": "tab:green", "ifa": "tab:red"}


# --- selecting records -------------------------------------------------------------------------

def select(recs: list[Record], row: str, methods: tuple[str, ...], frozen: bool = False) -> dict[str, list[Record]]:
    """MNIST records of the paper row `row` (a model without regulariser is its own label, e.g.
    "2x800 Tanh"), by method: the experiment that fills each cell (records.fill, the same rule
    as the tables')."""
    filled = records.cells(recs)
    return {m: filled[("mnist", row, m, frozen)] for m in methods if ("mnist", row, m, frozen) in filled}


def say_without(figure: str, methods: tuple[str, ...], by_method: dict) -> None:
    """A figure drawn with some of its methods only says which it lacks (its `how` runs them)."""
    if lacking := [NAMES.get(m, m) for m in methods if m not in by_method]:
        print(f"dfarun-figures: note: {figure}: no records of {', '.join(lacking)}: drawn without them",
              file=sys.stderr)


def curves(by_method: dict[str, list[Record]]) -> pd.DataFrame:
    """Per method and epoch: mean, min and max over seeds of the training and test error."""
    return curve.table(by_method)


def budget(by_method: dict[str, list[Record]]) -> str:
    """The seeds and epoch limit behind a figure, per method where the methods differ."""
    seeds = {m: len(rs) for m, rs in by_method.items()}
    limits = sorted({r.max_epochs for rs in by_method.values() for r in rs})
    if len(set(seeds.values())) == 1:
        n = next(iter(seeds.values()))
        said = f"{n} seed{'s' * (n != 1)}"
    else:
        said = "seeds: " + ", ".join(f"{NAMES.get(m, m)} {n}" for m, n in seeds.items())
    epochs = f"{limits[0]}" if len(limits) == 1 else f"{limits[0]}-{limits[-1]}"
    return f"{said}, at most {epochs} epoch{'s' * (limits != [1])}"


def _plot_curves(ax, table: pd.DataFrame, label: Callable[[str], str]) -> None:
    methods = sorted(set(table.method), key=list(NAMES).index)  # BP, FA, DFA, ... as in the paper
    curve.plot(ax, table, methods, label, lambda i, method: COLORS.get(method))
    ax.legend(fontsize=8)


_save = curve.save


# --- the figures -----------------------------------------------------------------------------------

def fig2_right(recs: list[Record], out: Path, data_dir: str | None) -> list[Path] | None:
    by_method = select(recs, "2x800 Tanh", ("bp", "fa", "dfa"))
    if not by_method:
        return None
    say_without("fig2_right", ("bp", "fa", "dfa"), by_method)
    table = curves(by_method)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    _plot_curves(ax, table, NAMES.get)
    ax.set_title(f"Figure 2 (right): 2x800 tanh, MNIST ({budget(by_method)})\nmean and range over the seeds "
                 "still training", fontsize=10)
    return _save(fig, table, out, "fig2_right")


def fig2_left(recs: list[Record], out: Path, data_dir: str | None) -> list[Path] | None:
    by_method = select(recs, "3x50 Tanh", ("bp", "dfa_first"), frozen=True)
    if not by_method:
        return None
    say_without("fig2_left", ("bp", "dfa_first"), by_method)
    table = curves(by_method)
    freezes = {NAMES[m]: rs[0].freeze for m, rs in by_method.items()}
    same = len(set(freezes.values())) == 1  # as the experiment runs them; else each method's own line
    fig, ax = plt.subplots(figsize=(6, 4.5))
    _plot_curves(ax, table, lambda m: f"unfrozen, {NAMES[m]}")
    for at in sorted(set(freezes.values())):
        who = "" if same else f" ({', '.join(m for m, n in freezes.items() if n == at)})"
        ax.axvline(at + 0.5, color="grey", lw=1)
        ax.text(at + 0.5, ax.get_ylim()[1], f" first layer unfrozen{who}", va="top", fontsize=8, color="grey")
    said = f"{next(iter(freezes.values()))}" if same else ", ".join(f"{m} {n}" for m, n in freezes.items())
    ax.set_title(f"Figure 2 (left): 3x50 tanh, MNIST, first layer frozen {said} epochs\n"
                 f"({budget(by_method)}; mean and range over the seeds still training)", fontsize=10)
    return _save(fig, table, out, "fig2_left")


def fig3(recs: list[Record], out: Path, data_dir: str | None, points: int = 2000) -> list[Path] | None:
    import torch  # here: the other figures and dfarun-tables run without it
    from sklearn.manifold import TSNE

    from dfarun.engine.data import load
    from dfarun.engine.hyp import CLASSES

    by_method = select(recs, "3x400 Tanh", ("bp", "dfa"))
    weights = {method: rs[0].path.with_suffix(".pt") for method, rs in by_method.items()}
    if len(weights) == 2 and (lacking := [m.upper() for m, path in weights.items() if not path.exists()]):
        # the weights are not kept in git: a clone has the records only
        raise Unavailable(f"its records are there, the final weights of {' and '.join(lacking)} (<record>.pt) are "
                          f"not: rerun `dfarun -m experiment=fig3 force=true` into this store to write them")
    nets = {}
    for method, path in weights.items():
        if not path.exists():  # one rule's records only: "missing records", below
            continue
        try:
            nets[method] = (by_method[method][0], saved_mlp(path, 28 * 28))
        except ValueError as err:
            print(f"warning: skipping {path}: {err}", file=sys.stderr)
    if len(nets) < 2:
        return None
    if data_dir is None:  # dfarun's own default, where MNIST is if the runs found it there
        data_dir = default_data_dir()
        if not (Path(data_dir).expanduser() / "MNIST" / "raw").is_dir():
            raise Unavailable(f"its records are there; it embeds MNIST's test images, which {data_dir} does not "
                              "hold: rerun with --data-dir <MNIST data_dir>")
    # the test images, min-max scaled as in training; the whole training set sets the scale, as it
    # spans the full pixel range (0..255) whatever subset a run trained on
    data = load(OmegaConf.create({"name": "mnist", "classes": CLASSES["mnist"], "train_size": None}), data_dir,
                torch.device("cpu"))
    x, y = data.x_test[:points], data.y_test[:points].numpy()
    embed = lambda h: TSNE(n_components=2, init="pca", random_state=0).fit_transform(h.numpy())
    inputs = embed(x)  # the same for both methods: embedded once
    rows, fig = [], plt.figure(figsize=(14, 7))
    for r, (method, (rec, net)) in enumerate(nets.items()):
        hs = net.forward(x[None]).hs  # [1, N, n] each: one seed
        for k, h in enumerate(hs):
            xy = inputs if k == 0 else embed(h[0])
            ax = fig.add_subplot(2, len(hs), r * len(hs) + k + 1)
            ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="tab10", s=2)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{NAMES[method]}: {'input' if k == 0 else f'hidden layer {k}'}", fontsize=10)
            rows += [{"method": method, "layer": k, "x": a, "y": b, "label": int(c)} for (a, b), c in zip(xy, y)]
    fig.suptitle(f"Figure 3: t-SNE of {len(y)} MNIST test images and 3x400 tanh features "
                 f"(seed {rec.seed}, {budget(by_method)}); colours are classes")
    return _save(fig, pd.DataFrame(rows), out, "fig3")


def saved_mlp(path: Path, features: int):
    """The one-seed MLP saved at `path` (save_weights=true); ValueError naming what is wrong."""
    import torch

    from dfarun.engine.nets import ACTIVATIONS, MLP
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, not a torch file
        if interrupted(err):  # Ctrl-C inside torch's C++ reader: not a bad file to skip
            raise KeyboardInterrupt from err
        raise ValueError(f"unreadable weights ({type(err).__name__})") from None
    if not isinstance(saved, dict) or "arch" in saved:
        raise ValueError("not the weights of an MLP")
    Ws, bs, act = saved.get("weights"), saved.get("biases"), saved.get("activation")
    if act not in ACTIVATIONS:
        raise ValueError(f"activation: {act!r}, expected one of {', '.join(ACTIVATIONS)}")
    if not (isinstance(Ws, list) and isinstance(bs, list) and len(Ws) == len(bs) >= 2):
        raise ValueError("weights, biases: expected two lists of the same length (>= 2)")
    fan_in = features
    for k, (W, b) in enumerate(zip(Ws, bs)):
        if not (isinstance(W, torch.Tensor) and W.dim() == 2 and W.shape[1] == fan_in and W.is_floating_point()):
            raise ValueError(f"weights[{k}]: expected a float matrix with {fan_in} columns")
        if not (isinstance(b, torch.Tensor) and tuple(b.shape) == (W.shape[0],) and b.is_floating_point()):
            raise ValueError(f"biases[{k}]: expected a float vector of {W.shape[0]}")
        fan_in = W.shape[0]
    return MLP([w[None].float() for w in Ws], [b[None].float() for b in bs], act)


def results_table(name: str, row: str, methods: tuple[str, ...], paper: dict[str, str]):
    """A small table of final errors beside the paper's numbers (IFA, 100 layers): the same
    numbers as a table cell (records.summary), MNIST's two decimals."""
    def render(recs: list[Record], out: Path, data_dir: str | None) -> list[Path] | None:
        by_method = select(recs, row, methods)
        if not by_method:
            return None
        say_without(name, methods, by_method)
        numbers, shown = [], []
        for method, rs in by_method.items():
            s = records.summary(rs)
            numbers.append({"row": row, "method": method, **s, "paper": paper.get(method, "")})
            shown.append({"model": row, "method": NAMES[method], "seeds": f"{s['seeds_learned']}/{s['seeds_asked']}",
                          "epochs (mean)": f"{s['epochs_mean']:.0f}", "stop": s["stop"],
                          "test error %": error_text(SimpleNamespace(**s), unit=""),
                          "train error %": f"{s['train_mean']:.2f}" if s["seeds_learned"] else "—",
                          "paper": paper.get(method, "")})
        text = (f"### {name} ({budget(by_method)})\n\n" + markdown(pd.DataFrame(shown))
                + "\n\nseeds: learned / asked (a seed learned: it did not diverge and its training error is "
                  "below 90% of chance); — where none learned; n= where fewer learned than asked; demo where a "
                  "seed stopped at a shorter epoch budget than the protocol's before it converged.\n")
        atomic.write_text(out / f"{name}.md", text)
        atomic.write_text(out / f"{name}.csv", pd.DataFrame(numbers).to_csv(index=False, float_format="%.6g"))
        return [out / f"{name}.md", out / f"{name}.csv"]
    return render


class Unavailable(Exception):
    """A figure whose records exist but which cannot be drawn as asked: the reason, for people."""


@dataclass(frozen=True)
class Figure:
    name: str
    render: Callable[[list[Record], Path, str | None], list[Path] | None]
    how: str  # what to run when its records are missing


FIGURES = [
    Figure("fig2_right", fig2_right, "dfarun -m experiment=fig2_right"),
    Figure("fig2_left", fig2_left, "dfarun -m experiment=fig2_frozen"),
    Figure("fig3", fig3, "dfarun -m experiment=fig3, then dfarun-figures --data-dir <MNIST data_dir>"),
    Figure("ifa", results_table("ifa", "4x100 Tanh", ("ifa",), {"ifa": "3.9% (train 0%)"}),
           "dfarun experiment=ifa_4x100"),
    Figure("deep", results_table("deep", "100x240 Tanh", ("bp", "fa", "dfa"),
                                 {"bp": "no convergence", "fa": "no convergence", "dfa": "3.92 ± 0.09% (train 0.12%)"}),
           "dfarun -m experiment=deep"),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["curves"]:  # any store's learning curves, by the settings named
        return curve.main(argv[1:])
    p = argparse.ArgumentParser(prog="dfarun-figures", description=__doc__.splitlines()[0],
                                epilog="dfarun-figures curves --store S --by KEYS: learning curves of any store, one "
                                       "line per group of settings (dfarun-figures curves --help)")
    p.add_argument("--store", nargs="+", default=["runs"], help="directories of run records (default: runs)")
    p.add_argument("--out", default=None, help="where PNG/CSV/MD go (default: <the first store>/figures)")
    p.add_argument("--data-dir", default=None, help="MNIST data_dir, for the test images Figure 3 embeds "
                   "(default: $DFARUN_DATA_DIR, else ~/.cache/dfarun/data, as for dfarun)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(f.name for f in FIGURES)}")
    args = p.parse_args(argv)
    args.out = args.out or str(Path(args.store[0]) / "figures")  # beside the records, not over results/
    names = [f.name for f in FIGURES]
    if args.only is not None and not (args.only and set(args.only.split(",")) <= set(names)):
        return _error(f"--only={args.only!r}: expected a comma-separated subset of {','.join(names)}")
    wanted = [f for f in FIGURES if args.only is None or f.name in args.only.split(",")]
    for root in args.store:
        if not Path(root).is_dir():
            return _error(f"--store={root!r}: no such directory")
    # records of a paper cell's label but other settings (protocol.py) draw no table-cell figure
    recs, off = protocol.split(records.read(Path(root) for root in args.store))  # bad records: one warning each
    for note in protocol.notes(off):
        print(f"dfarun-figures: note: {note}", file=sys.stderr)
    out = Path(args.out)
    missing = []
    for figure in wanted:
        try:
            out.mkdir(parents=True, exist_ok=True)
            written = figure.render(recs, out, args.data_dir)
        except DfarunError as err:  # the MNIST test images are missing or unreadable (Figure 3)
            return _error(f"{figure.name}: {err}")
        except Unavailable as why:
            print(f"{figure.name}: not drawn: {why}")
            continue
        except OSError as err:  # writing (a file or folder in the way, a full disk) or reading a weights file
            return _error(f"{figure.name}: {err.filename or out}: {err.strerror or err}")
        if written:
            print(f"{figure.name}: " + ", ".join(str(w) for w in written))
        else:
            missing.append(figure)
    for figure in missing:
        print(f"{figure.name}: missing records; run: {figure.how}")
    return 0


def _error(message: str) -> int:
    print(f"dfarun-figures: error: {message}", file=sys.stderr)
    return 2


def cli() -> None:
    # Ctrl-C is one line (entry.py): figures are written whole or not at all (atomic.py), so
    # there is nothing to clean up
    sys.exit(main())
