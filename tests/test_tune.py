"""Tuning as the paper did it (docs/tuning.md): the example command of the docs, shrunk to tiny
synthetic data and a 2-trial Optuna study, runs through the console script's code (in-process,
helpers.run_dfarun; test_cli.py runs the installed script itself); the sweeper's
optimization_results.yaml lands in the store's sweep folder and names the trial whose records
have the lowest metric (mean over seeds of the validation error at the chosen epoch)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from statistics import mean

import pytest
import yaml

from helpers import ROOT, run_dfarun

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the tune extra: pip install 'dfarun[tune]'")

MARK = "<!-- tuning-example"
# the docs' command on tiny data: more than the 10,000 held-out examples, so that val=true has 128 to train on
TINY = {"hydra.sweeper.n_trials": "2", "model": "3x50_tanh", "max_epochs": "2", "dataset": "synthetic",
        "dataset.train_size": "10128", "dataset.test_size": "64", "dataset.features": "16", "compile": "false",
        "device": "cpu", "seeds": "[0,1]"}


def example() -> list[str]:
    """The arguments of the command after the marker in docs/tuning.md (`dfarun` left out)."""
    text = (ROOT / "docs" / "tuning.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARK):], re.S)[1]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[0] == "dfarun"
    return argv[1:]


def shrunk(argv: list[str], store: Path) -> list[str]:
    out, seen = [], set()
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if eq and key in {**TINY, "store": 0}:
            arg = f"store={store}" if key == "store" else f"{key}={TINY[key]}"
            seen.add(key)
        out.append(arg)
    return out + [f"{k}={v}" for k, v in TINY.items() if k not in seen]


# optuna's import of SQLAlchemy's declarative_base: theirs to move, and in-process it would show here
@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.storages._rdb.models")
def test_the_docs_example_study_writes_its_best_trial_under_the_stores_sweep_folder(tmp_path):
    argv = example()
    assert {"hydra/sweeper=optuna", "val=true", "schedule=step"} <= set(argv)
    assert any(a.startswith("lr=tag(log,interval(") for a in argv) and any(a.startswith("halve_every=") for a in argv)
    runs = tmp_path / "runs"
    out = run_dfarun(tmp_path, *shrunk(argv, runs))
    assert out.code == 0, out.out + out.err
    assert "Traceback" not in out.out + out.err

    # every trial is an ordinary job: its records in the store, one per seed
    trials: dict[tuple[float, int], list[float]] = {}
    for path in runs.glob("*.json"):
        rec = json.loads(path.read_text())
        assert rec["config"]["val"] is True and rec["config"]["schedule"] == "step"
        trials.setdefault((rec["config"]["lr"], rec["config"]["halve_every"]), []).append(rec["best_val"]["val_error"])
    assert len(trials) == 2 and all(len(errors) == 2 for errors in trials.values())
    metric = {params: mean(errors) for params, errors in trials.items()}

    [results] = list((runs / "sweeps").glob("*/optimization_results.yaml"))
    best = yaml.safe_load(results.read_text())
    assert best["name"] == "optuna" and set(best["best_params"]) == {"lr", "halve_every"}
    [chosen] = [p for p in metric if p[0] == pytest.approx(best["best_params"]["lr"], rel=1e-12)
                and p[1] == best["best_params"]["halve_every"]]
    assert best["best_value"] == pytest.approx(metric[chosen]) == pytest.approx(min(metric.values()))
