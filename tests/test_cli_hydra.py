"""The CLI's use of Hydra: its public API only, each job composed once before any job trains,
and what `--help`, `--cfg job` and a launcher without its plugin show.

In-process (helpers.run_dfarun, cli.check_args): no subprocess start-up to pay.
"""
from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins

import dfarun
from dfarun.cli import main as cli
from dfarun.errors import DfarunError

from helpers import FAST, run_dfarun


def test_dfarun_uses_no_private_hydra_module():
    sources = sorted(Path(dfarun.__file__).parent.rglob("*.py"))
    assert sources and [p.name for p in sources if "_internal" in p.read_text()] == []


@pytest.mark.parametrize("argv, composed, jobs", [
    (FAST, 1, 1),                                               # a run: its job is the primary config
    (["-m", *FAST], 1, 1),                                      # a sweep of one job: the same
    (["-m", *FAST, "method=bp,fa,dfa"], 4, 3),                  # the primary config, then each job once
    (["-m", "experiment=fig3", "reg=none,dropout", "device=cpu"], 5, 4),  # hydra.sweeper.params x the command line
])
def test_each_job_is_composed_once(monkeypatch, tmp_path, argv, composed, jobs):
    calls = []
    real = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: calls.append(k["overrides"]) or real(*a, **k))
    assert len(cli.check_args([*argv, f"data_dir={tmp_path}"])) == jobs
    assert len(calls) == composed


@pytest.mark.parametrize("override, group", [
    ("experiment=nope", "experiment"),                 # an optional group: Hydra would skip it
    ("experiment=../row/2x800_tanh", "experiment"),    # Hydra would load conf/row/2x800_tanh.yaml
    ("hydra/launcher=nope", "hydra/launcher"),
])
def test_a_group_option_is_one_hydra_lists(override, group):
    with pytest.raises(DfarunError, match=f"^{group}='[^']*': no such option; expected one of "):
        cli.check_args([*FAST, override])


def test_help_says_what_dfarun_is_and_shows_the_data_folder(tmp_path):
    result = run_dfarun(tmp_path, "--help", env={"DFARUN_DATA_DIR": "/data/here"})
    assert result.code == 0, result
    assert result.out.startswith("dfarun reproduces Nøkland 2016")
    assert "is powered by Hydra" not in result.out
    for words in ("Usage: dfarun [-m] [key=value ...]", "dfarun -m experiment=table1", "== Config ==",
                  "method: bp, dfa, dfa_first, fa, ifa", "data_dir: /data/here", "dfarun --hydra-help"):
        assert words in result.out, words
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("env, argv, shown", [
    ({"DFARUN_DATA_DIR": ""}, [], "data_dir: ~/.cache/dfarun/data"),
    ({"DFARUN_DATA_DIR": "/data/here"}, [], "data_dir: /data/here"),
    ({"DFARUN_DATA_DIR": "/data/here"}, ["data_dir=/mine"], "data_dir: /mine"),  # the command line's wins
])
def test_cfg_job_shows_the_data_folder_not_its_resolver(tmp_path, env, argv, shown):
    result = run_dfarun(tmp_path, "--cfg", "job", *argv, env=env)
    assert result.code == 0, result
    assert shown in result.out.splitlines() and "${" not in result.out
    assert os.listdir(tmp_path) == []


def test_a_launcher_without_its_plugin_says_how_to_install_it(tmp_path, monkeypatch):
    Plugins.instance()  # the installed plugins' configs are in the config store now: take joblib's out
    monkeypatch.delitem(ConfigStore.instance().repo["hydra"]["launcher"], "joblib.yaml")
    result = run_dfarun(tmp_path, "-m", "hydra/launcher=parallel", *FAST, "store=runs")
    assert result.code == 2
    assert result.line() == ("dfarun: error: hydra/launcher='parallel': the Hydra launcher plugin it needs is not "
                             "installed (no hydra/launcher/joblib); make install, or pip install 'dfarun[cluster]'")
    assert os.listdir(tmp_path) == []
