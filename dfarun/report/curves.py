"""Learning curves: per group of seeds and epoch, the mean and range of the training and test
error; Figure 2's panels, and `dfarun-figures curves --by KEYS` for any store.

    dfarun-figures curves --store S [S ...] --by method.name,lr [--where KEY=VALUE] [--out DIR]

draws one line pair (test solid, training dashed) per group of the settings KEYS (groups.py),
every record in the stores counted, and writes curves_by_<KEYS>.png and .csv.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from dfarun import atomic  # noqa: E402
from dfarun.report import groups, records  # noqa: E402
from dfarun.run.record import Record  # noqa: E402


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
    """Each group's mean test (solid) and training (dashed) error, the range over its seeds shaded."""
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
    ax.legend(fontsize=8)


def save(fig, data: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """<out>/<name>.png and the CSV of the numbers behind it, each whole or not at all."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic.write_bytes(out / f"{name}.png", png.getvalue())
    atomic.write_text(out / f"{name}.csv", data.to_csv(index=False))
    return [out / f"{name}.png", out / f"{name}.csv"]


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
        by = groups.keys(args.by, recs)
        recs = groups.where(recs, args.where)
        if not recs:
            raise groups.Refused(f"--where={' '.join(args.where)!r}: no record has these settings")
    except groups.Refused as why:
        return _error(str(why))
    grouped = {", ".join(vals): rs for vals, rs in groups.group(recs, by).items()}
    data = table(grouped, "group")
    fig, ax = plt.subplots(figsize=(7, 5))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plot(ax, data, list(grouped), str, lambda i, g: cycle[i % len(cycle)], "group")
    limits = sorted({r.max_epochs for r in recs})
    epochs = f"{limits[0]}" if len(limits) == 1 else f"{limits[0]}-{limits[-1]}"
    ax.set_title(f"Learning curves by {', '.join(by)}: {len(recs)} seeds, at most {epochs} epochs\n"
                 "mean and range over the seeds still training", fontsize=10)
    data.insert(0, "by", ",".join(by))
    out = Path(args.out or Path(args.store[0]) / "figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = save(fig, data, out, "curves_by_" + "+".join(by))
    except OSError as err:
        return _error(f"{err.filename or out}: {err.strerror or err}")
    print("curves: " + ", ".join(str(w) for w in written))
    return 0


def _error(message: str) -> int:
    print(f"dfarun-figures: error: {message}", file=sys.stderr)
    return 2
