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

from dfarun.config.schema import CONF_DIR, epoch_limit, row_label
from dfarun.run.experiment import experiment, settings

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
    """(data set, paper row, method) -> that cell's settings (experiment.settings), less the budget."""
    return {cell: found for t in TABLES for cell, (found, _) in _table_cells(t).items()}


TABLES = (1, 2, 3)


@cache
def _datasets() -> dict[int, str]:
    """Each table's data set, as its experiment file overrides it (read, not composed)."""
    found = {}
    for t in TABLES:
        for entry in OmegaConf.load(CONF_DIR / "experiment" / f"table{t}.yaml").defaults:
            if isinstance(entry, DictConfig) and "override /dataset" in entry:
                found[t] = entry["override /dataset"]
    return found


@cache
def _table_cells(table: int) -> dict[tuple[str, str, str], tuple[dict, int]]:
    """(data set, paper row, method) -> (settings less the budget, epoch limit) of one table's
    cells: composed once, and only for a table whose data set some record has (a compose is a
    tenth of a second, a table ten of them)."""
    from hydra import compose

    cells, grid = {}, table_grids([table])[table]
    for row, cfg in table_rows([table])[table]:
        for method in grid.method.split(","):
            if (CONF_DIR / "row_method" / f"{row}_{method}.yaml").is_file():  # the row's own settings for it
                with _composing():
                    own = compose("config", overrides=[f"experiment=table{table}", f"row={row}", f"method={method}"])
            else:  # a method's config is its name: our own composed copy, renamed
                own, cfg.method.name = cfg, method
            cells[(own.dataset.name, row_label(own), method)] = (_protocol(experiment(own)), epoch_limit(own))
    return cells


def _protocol(config: dict, budget: tuple[str, ...] = BUDGET) -> dict:
    ours = settings(config)
    for key in budget:
        ours.pop(key, None)
    return ours


@cache
def _figure_cells() -> dict[tuple[str, str, str, bool], tuple[dict, int, int]]:
    """(data set, row, method, first layer frozen?) -> (settings less the figure budget, epoch
    limit, epochs frozen) of each method of the FIGURES experiments."""
    from hydra import compose

    cells = {}
    with _composing():
        for name in FIGURES:
            cfg = compose("config", overrides=[f"experiment={name}"])
            sweep = OmegaConf.select(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml"),
                                     "hydra.sweeper.params.method", default=None)
            for method in sweep.split(",") if sweep else [cfg.method.name]:
                cfg.method.name = method
                cell = (cfg.dataset.name, row_label(cfg), method, cfg.freeze_first_epochs > 0)
                cells[cell] = (_protocol(experiment(cfg), FIGURE_BUDGET), epoch_limit(cfg),
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
    cells = _dataset_cells(dataset)
    if (dataset, row, method) in cells:
        return cells[(dataset, row, method)]
    twin = next((cell for cell in cells if cell[1] == row), None)
    if twin is None or method in _paper_rules():  # no such row, or a paper rule not in this table
        return None
    theirs, limit = cells[twin]
    return {**theirs, "method": {**theirs["method"], "name": method}}, limit


@cache
def _dataset_cells(dataset: str) -> dict[tuple[str, str, str], tuple[dict, int]]:
    return {cell: found for t, d in _datasets().items() if d == dataset for cell, found in _table_cells(t).items()}


@cache
def _paper_rules() -> frozenset[str]:
    return frozenset(m for grid in table_grids(TABLES).values() for m in grid.method.split(","))


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
        cells_settings, limit, *frozen = paper
        diffs = _differing(ours, cells_settings) if (ours := _protocol(r.config, budget)) != cells_settings else []
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
