"""engine/hyp.py: the author's constants, each with its unit and source, written once.

The engine reads them from the table (no copy of a value elsewhere in dfarun/engine), the
values are the ones the paper and the author's code give, and conf/ (where a job reads the
settings a user may change) still says what the table says."""
from __future__ import annotations

import ast
import tokenize
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dfarun.config.schema import CONF_DIR, Config
from dfarun.engine import hyp, nets, rules, state, step, train
from dfarun.engine.hyp import CONF, HYP

ENGINE = Path(hyp.__file__).parent
ENTRIES = [(f"{group}.{name}", h) for group, table in HYP.items() for name, h in table.items()] + list(CONF.items())


@pytest.mark.parametrize("name,entry", ENTRIES, ids=[n for n, _ in ENTRIES])
def test_every_constant_has_a_value_a_unit_and_a_source(name, entry):
    assert isinstance(entry.value, (int, float)) and not isinstance(entry.value, bool)
    assert entry.unit.strip() and entry.source.strip()
    assert any(s in entry.source for s in ("paper", "code")), f"{name}: cite the paper or the author's code"


def test_the_values_are_the_papers_and_the_authors():
    """Changing one of these changes what every run trains: it must be a deliberate edit here."""
    assert (step.RMSPROP_DECAY, step.RMSPROP_EPS) == (0.99, 1e-8)
    assert (train.AVG_KEEP, train.STOP_AT, train.MAX_HALVINGS, state.AVG_START) == (0.75, 1e-4, 8, 1.0)
    assert (nets.INIT_POWER, rules.FEEDBACK_POWER) == (-0.5, -0.5)
    assert {k: v.value for k, v in CONF.items()} == {
        "max_epochs": 300, "batch_size": 64, "lr_mnist": 1e-4, "lr_cifar10": 5e-5, "lr_cifar100": 2.5e-5,
        "p_input": 0.1, "p_hidden": 0.5, "fgsm_eps": 0.08}


def test_the_engine_reads_the_table():
    """The engine's names are the table's own objects, and the init draws within its bounds."""
    assert step.RMSPROP_DECAY is HYP["rmsprop"]["decay"].value
    assert train.STOP_AT is HYP["stop"]["at"].value and state.AVG_START is HYP["stop"]["start"].value
    g = torch.Generator().manual_seed(0)
    (w1, w2), (b1, b2) = nets.sample_layers([400, 100, 10], g)
    assert w1.abs().max() <= 400 ** -0.5 < 1.01 * w1.abs().max()  # the bound is reached, not exceeded
    assert w2.abs().max() <= 100 ** -0.5 < 1.05 * w2.abs().max()
    (b,) = rules.first_layer_only([w1, w2], [100], 10, g)
    assert b.abs().max() <= 100 ** -0.5 < 1.05 * b.abs().max()


def test_no_other_engine_file_writes_an_authors_number():
    """A literal 0.99, 1e-8, 0.75, 1e-4 or 0.5 anywhere in dfarun/engine but hyp.py would be a
    second copy of a constant (comments and docstrings may name them)."""
    authors = {abs(h.value) for _, h in ENTRIES if abs(h.value) not in (1, 8, 64, 300)}
    found = []
    for path in sorted(ENGINE.glob("*.py")):
        if path.name == "hyp.py":
            continue
        with open(path) as f:
            for tok in tokenize.generate_tokens(f.readline):
                if tok.type == tokenize.NUMBER and ast.literal_eval(tok.string) in authors:
                    found.append(f"{path.name}:{tok.start[0]}: {tok.string}")
    assert not found


@pytest.mark.parametrize("name", sorted(CONF))
def test_conf_says_what_the_table_says(name):
    entry = CONF[name]
    file, key = (part.strip() for part in entry.conf.split(":"))
    assert OmegaConf.load(CONF_DIR / file)[key] == entry.value


def test_the_schema_defaults_and_the_paper_profile_agree():
    schema = OmegaConf.structured(Config)
    assert schema.max_epochs == OmegaConf.load(CONF_DIR / "profile" / "paper.yaml").max_epochs == CONF["max_epochs"].value
    assert schema.batch_size == CONF["batch_size"].value


def test_the_data_sets_facts_are_written_once():
    """The published data sets' facts live in hyp.py alone, read by engine/data.py (torch) and
    run/record.py (torch-free) alike: no module keeps a copy."""
    package = Path(hyp.__file__).parents[1]
    copies = [p for p in package.rglob("*.py") if p.name != "hyp.py" and '"cifar100": 100' in p.read_text()]
    assert copies == []
    assert hyp.CLASSES == {"mnist": 10, "cifar10": 10, "cifar100": 100}
