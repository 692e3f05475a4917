"""Which records may fill a cell of the paper's tables.

A record is filed under its paper row by its model's and regulariser's labels ("2x800 Tanh",
" + DO"), and those say nothing of overrides: `model=2x800_tanh model.width=3`, `lr=3e-3` or
`dataset.train_size=500` run under the label "2x800 Tanh" too. A record fills a table cell
only if it ran that cell's settings, the ones `conf/experiment/table<N>.yaml` composes for
its row and method, up to the budget (seeds and profile are not settings at all): a shorter
epoch limit, so that `profile=quick` and a short `max_epochs` still fill a (demo) table, but
not a longer one than the cell's (the paper stopped at 300 epochs). The others are left out of
the tables and of the figures drawn from the tables' cells, with a note that names what
differs. The figures' own rows (Figure 2 left's 3x50, Figure 3's 3x400, IFA's 4x100) are held
to their experiment's settings (`conf/experiment/<name>.yaml`) the same way, Figure 2 left's
frozen phase being part of its budget.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import cache
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from dfarun.run import store
from dfarun.config.schema import CONF_DIR

BUDGET = ("max_epochs",)  # may be below the table's: a shorter run of the same protocol
FIGURE_BUDGET = (*BUDGET, "freeze_first_epochs")  # a figure states both in its title
FIGURES = ("fig2_frozen", "fig3", "ifa_4x100")  # the experiments of rows that are in no table


def table_grids(tables: Iterable[int] = (1, 2, 3)) -> dict:
    """Each table's sweep (conf/experiment/table<N>.yaml): its rows and methods, comma-separated."""
    return {t: OmegaConf.load(CONF_DIR / "experiment" / f"table{t}.yaml").hydra.sweeper.params for t in tables}


def _composing():
    """Where compose() may run: inside a Hydra app (or a test's initialize) its own instance
    composes; else one of ours, for the duration."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    return nullcontext() if GlobalHydra.instance().is_initialized() else \
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")


def table_rows(tables: Iterable[int] = (1, 2, 3), keep=lambda row: True) -> dict[int, list[tuple[str, DictConfig]]]:
    """Each table's rows that `keep` keeps, composed as `experiment=table<N> row=<row>` (the
    method left at the default: a method's config is its name alone)."""
    from hydra import compose

    with _composing():
        return {t: [(row, compose("config", overrides=[f"experiment=table{t}", f"row={row}"]))
                    for row in grid.row.split(",") if keep(row)] for t, grid in table_grids(tables).items()}


def paper_cells() -> dict[tuple[str, str, str], dict]:
    """(data set, paper row, method) -> that cell's settings (store.settings), less the budget."""
    return _cells()[0]


@cache
def _cells() -> tuple[dict, dict]:
    from dfarun.config.schema import epoch_limit
    from dfarun.config.schema import row_label

    cells, limits, grids = {}, {}, table_grids()
    for t, rows in table_rows().items():
        for _, cfg in rows:
            for method in grids[t].method.split(","):
                cfg.method.name = method  # our own composed copy; a method's config is its name
                cell = (cfg.dataset.name, row_label(cfg), method)
                cells[cell], limits[cell] = _protocol(store.experiment(cfg)), epoch_limit(cfg)
    return cells, limits


def _protocol(config: dict, budget: tuple[str, ...] = BUDGET) -> dict:
    settings = store.settings(config)
    for key in budget:
        settings.pop(key, None)
    return settings


@cache
def _figure_cells() -> dict[tuple[str, str, str, bool], tuple[dict, int, int]]:
    """(data set, row, method, first layer frozen?) -> (settings less the figure budget, epoch
    limit, epochs frozen) of each method of the FIGURES experiments."""
    from hydra import compose

    from dfarun.config.schema import epoch_limit
    from dfarun.config.schema import row_label

    cells = {}
    with _composing():
        for name in FIGURES:
            cfg = compose("config", overrides=[f"experiment={name}"])
            sweep = OmegaConf.select(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml"),
                                     "hydra.sweeper.params.method", default=None)
            for method in sweep.split(",") if sweep else [cfg.method.name]:
                cfg.method.name = method
                cell = (cfg.dataset.name, row_label(cfg), method, cfg.freeze_first_epochs > 0)
                cells[cell] = (_protocol(store.experiment(cfg), FIGURE_BUDGET), epoch_limit(cfg),
                               cfg.freeze_first_epochs)
    return cells


def figure_cell(dataset: str, row: str, method: str, frozen: bool) -> tuple[dict, int, int] | None:
    """(the settings, the epoch limit, the epochs frozen) of a figure's own row, as table_cell;
    None for other rows."""
    return _figure_cells().get((dataset, row, method, frozen))


def table_cell(dataset: str, row: str, method: str) -> tuple[dict, int] | None:
    """(the settings, the epoch limit) a record of (dataset, row, method) must have to fill a
    cell of the tables; None when the row is in no table. A rule the paper did not run (a new
    one in rules.py) gets a cell on every row, with that row's settings under its own name."""
    cells, limits = _cells()
    if (dataset, row, method) in cells:
        return cells[(dataset, row, method)], limits[(dataset, row, method)]
    twin = next(((d, r, m) for d, r, m in cells if (d, r) == (dataset, row)), None)
    if twin is None or method in {m for _, _, m in cells}:  # no such row, or a paper rule not in this table
        return None
    return {**cells[twin], "method": {**cells[twin]["method"], "name": method}}, limits[twin]


def split(recs: Iterable) -> tuple[list, dict[tuple[str, str, str], set[str]]]:
    """(the records that may fill the tables' and figures' cells, and for each cell that some
    other records claim: the settings by which they differ, as `key=value` overrides). Records
    of rows in no table and no figure are kept."""
    kept, off = [], {}
    for r in recs:
        cell = (r.dataset, r.row, r.method)
        budget = BUDGET
        if (paper := table_cell(*cell)) is None:
            paper, budget = figure_cell(*cell, r.freeze > 0), FIGURE_BUDGET
        if paper is None:  # a row of no table and no figure: nothing to hold it to
            kept.append(r)
            continue
        settings, limit, *frozen = paper
        diffs = _differing(ours, settings) if (ours := _protocol(r.config, budget)) != settings else []
        if r.max_epochs > limit:  # Record.max_epochs is the limit the seed trained under
            diffs.append(f"max_epochs={r.config['max_epochs']} (the cell's limit is {limit})")
        if frozen and frozen[0] and not (r.freeze <= frozen[0] and r.freeze < r.max_epochs):
            # Figure 2 (left): a shorter frozen phase is budget; a longer one, or one the run never leaves, is not
            diffs.append(f"freeze_first_epochs={r.freeze} (the cell's is {frozen[0]}, and the layer must be "
                         f"released before the last epoch, {r.max_epochs})")
        if diffs:
            off.setdefault(cell, set()).update(diffs)
        else:
            kept.append(r)
    return kept, off


def _differing(ours: dict, paper: dict, prefix: str = "") -> list[str]:
    """The dotted keys where `ours` differs from `paper`, with our value ("(absent)" where ours
    keeps the schema's default, or predates the key, and the paper's cell sets another)."""
    out = []
    for key in sorted(ours.keys() | paper.keys()):
        a, b = ours.get(key, "(absent)"), paper.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}={a}")
    return out


def notes(off: dict[tuple[str, str, str], set[str]]) -> list[str]:
    """One line per cell whose records were left out: what they ran instead."""
    return [f"{dataset} {row} {method.upper()}: records with other settings than the paper's cell left out "
            f"({', '.join(sorted(diffs))})" for (dataset, row, method), diffs in sorted(off.items())]
