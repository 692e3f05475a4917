"""Learning curves: per group of seeds and epoch, the mean and range of the training and test
error; Figure 2's panels, and `dfarun-figures curves --by KEYS` for any store.

    dfarun-figures curves --store S [S ...] --by method.name,lr [--where KEY=VALUE] [--out DIR]

draws per group of the settings KEYS (groups.py), every record in the stores counted, its test
(solid) and training (dashed) error; with two or more keys, one panel per value of the first
(a shared error axis) and one colour per value of the others, the same in every panel. It
writes curves_by_<KEYS>[+where_<KEY>=<VALUE>...].png and .csv.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dfarun import atomic  # noqa: E402
from dfarun.report import groups, records  # noqa: E402
from dfarun.report.text import demo_budget  # noqa: E402
from dfarun.run.experiment import RUNTIME_KEYS  # noqa: E402
from dfarun.run.record import Record  # noqa: E402

TRAIN = "train (on batches, as trained)"  # docs/protocol.md: the running error over the epoch's mini-batches


def table(by: dict[str, list[Record]], column: str = "method") -> pd.DataFrame:
    """Per group (its name in `column`) and epoch: the seeds still training, and the mean, min
    and max over them of the training and test error."""
    rows = [{column: g, "seed": r.seed, "epoch": h["epoch"], "train_error": h["train_error"],
             "test_error": h["test_error"]} for g, rs in by.items() for r in rs for h in r.history]
    long = pd.DataFrame(rows)
    return long.groupby([column, "epoch"]).agg(
        seeds=("seed", "size"), train_mean=("train_error", "mean"), train_min=("train_error", "min"),
        train_max=("train_error", "max"), test_mean=("test_error", "mean"), test_min=("test_error", "min"),
        test_max=("test_error", "max")).reset_index()


def plot(ax, curves: pd.DataFrame, groups_in_order: list[str], label: Callable[[str], str],
         color: Callable[[int, str], str | None], column: str = "method") -> None:
    """Each group's mean test (solid) and training (dashed) error, the range over its seeds shaded;
    the caller places the legend."""
    for i, g in enumerate(groups_in_order):
        rows = curves[curves[column] == g]
        for kind, style in (("train", "--"), ("test", "-")):
            ax.plot(rows.epoch, rows[f"{kind}_mean"], style, color=color(i, g), label=f"{label(g)} {kind}")
            ax.fill_between(rows.epoch, rows[f"{kind}_min"], rows[f"{kind}_max"], color=color(i, g), alpha=0.15)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50 %
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.grid(True, which="both", alpha=0.3)


def save(fig, data: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """<out>/<name>.png and the CSV of the numbers behind it, each whole or not at all."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic.write_bytes(out / f"{name}.png", png.getvalue())
    atomic.write_text(out / f"{name}.csv", data.to_csv(index=False))
    return [out / f"{name}.png", out / f"{name}.csv"]


def draw(recs: list[Record], by: list[str], data: pd.DataFrame):
    """The figure of a --by view: one panel per value of by[0] where there are further keys (a
    shared error axis), else one; a colour per value of the other keys, the same in each panel;
    the legend outside the panels, the line styles said once in it; the title says the groups,
    seeds, budget and what every record shares."""
    panel_keys, colour_keys = (by[:1], by[1:]) if len(by) > 1 else ([], by)
    panels = list(groups.group(recs, panel_keys)) if panel_keys else [()]
    shades = list(groups.group(recs, colour_keys))  # in natural order: 1e-4 before 3e-4
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(shades) > len(palette):  # more than the cycle tells apart: a colour map's steps
        palette = [plt.get_cmap("viridis")(i / (len(shades) - 1)) for i in range(len(shades))]
    colour = dict(zip(shades, palette))
    cols = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    width = 3.6 * cols + 3.2  # inches: the panels, then the legend beside them
    fig, axes = plt.subplots(rows, cols, sharey=True, squeeze=False, figsize=(width, 3.3 * rows + 1.3))
    split = len(panel_keys)  # a group's values: its panel's, then its colour's
    named = {", ".join(vals): (vals[:split], vals[split:]) for vals in groups.group(recs, by)}
    for ax, panel in zip(axes.flat, panels):
        inside = [g for g, (at, _) in named.items() if at == panel]
        plot(ax, data, inside, str, lambda i, g: colour[named[g][1]], "group")
        if panel_keys:
            ax.set_title(f"{panel_keys[0]}={panel[0]}", fontsize=10)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 1:].flat:  # the error axis is shared: its label and numbers on the left only
        ax.set_ylabel("")
        ax.tick_params(labelleft=False)
    handles = [Line2D([], [], color=colour[v], label=", ".join(f"{k}={x}" for k, x in zip(colour_keys, v)))
               for v in shades]
    handles += [Line2D([], [], ls="none", label=" "),  # a blank line between the colours and the styles
                Line2D([], [], color="0.3", label="test"), Line2D([], [], color="0.3", ls="--", label=TRAIN),
                Patch(color="0.3", alpha=0.15, label="range over the seeds")]
    axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1), borderaxespad=0, fontsize=8)
    fig.suptitle(title(recs, by, int(width * 12)), fontsize=10)  # about 12 characters an inch at 10 pt
    return fig


def title(recs: list[Record], by: list[str], chars: int = 110) -> str:
    """What the figure is: the groups and seeds, the epoch budget ("demo: 5 of 300 epochs"
    where it is short of the protocol's), and the settings every record shares, in lines of
    at most `chars` characters."""
    grouped = groups.group(recs, by)
    n, sizes = len(grouped), sorted({len(rs) for rs in grouped.values()})
    seeds = f"{sizes[0]} seed{'s' * (sizes[0] != 1)}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} seeds"
    limits = sorted({r.max_epochs for r in recs})
    epochs = f"{limits[0]}" if len(limits) == 1 else f"{limits[0]}-{limits[-1]}"
    demos = sum(any(records.short(r) for r in rs) for rs in grouped.values())
    line = (f"Learning curves by {', '.join(by)}{' (demo)' * (demos == n)}: {n} group{'s' * (n != 1)} × {seeds}, "
            f"at most {epochs} epochs")
    common = {k: v for k, v in groups.shared(recs).items() if k not in by and k not in RUNTIME_KEYS}
    said = [f"{k}={v}" for k, v in sorted(common.items())]
    if (budget := demo_budget(recs)) is not None:
        said.append(f"demo{'' if demos == n else f' ({demos} of {n} groups)'}: {budget[0]} of {budget[1]} epochs")
    lines = [line]
    for i, item in enumerate(said):  # wrapped between settings, never inside one
        if i and len(lines[-1]) + len(item) + 2 <= chars:
            lines[-1] += f" {item}"
        else:
            lines.append(item)
        lines[-1] += "," if i + 1 < len(said) else ""
    return "\n".join([*lines, "lines: the mean over the seeds still training"])


def main(argv: list[str]) -> int:
    """`dfarun-figures curves`: learning curves of any store, by the settings --by names."""
    p = argparse.ArgumentParser(prog="dfarun-figures curves", description=main.__doc__.split(": ", 1)[1])
    p.add_argument("--store", nargs="+", default=["runs"], help="directories of run records (default: runs)")
    p.add_argument("--by", required=True, metavar="KEYS",
                   help="one line per group of these settings (dotted config keys, comma-separated, e.g. method.name,lr)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only records with this setting (repeatable: all must hold)")
    p.add_argument("--out", default=None, help="where the PNG and CSV go (default: <the first store>/figures)")
    args = p.parse_args(argv)
    for root in args.store:
        if not Path(root).is_dir():
            return _error(f"--store={root!r}: no such directory")
    recs = records.read(Path(root) for root in args.store)
    try:
        if not recs:
            raise groups.Refused("no valid run records in these stores")
        by, recs, filters = groups.select(recs, args.by, args.where)
    except groups.Refused as why:
        return _error(str(why))
    data = table({", ".join(vals): rs for vals, rs in groups.group(recs, by).items()}, "group")
    fig = draw(recs, by, data)
    data.insert(0, "by", ",".join(by))
    for i, (key, v) in enumerate(filters.items()):  # the filter, as the table's CSV has it
        data.insert(1 + i, key, v)
    out = Path(args.out or Path(args.store[0]) / "figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = save(fig, data, out, groups.stem("curves_by_", by, filters))
    except OSError as err:
        return _error(f"{err.filename or out}: {err.strerror or err}")
    print("curves: " + ", ".join(str(w) for w in written))
    return 0


def _error(message: str) -> int:
    print(f"dfarun-figures: error: {message}", file=sys.stderr)
    return 2
