"""runner.run on composed configs: records, skip-if-done, validation, every model x method,
alignment tracking and the experiment key (stacked seeds: test_stacking.py).

Configs come from `make_cfg` (conftest.py): composed exactly as the CLI composes them and
shrunk to a tiny synthetic set with the store under tmp_path. Training tests use the small
3x50_tanh model so each stays around a second on two CPU cores.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dfarun.run import store
from dfarun.config.schema import CONF_DIR
from dfarun.errors import ConfigError, DfarunError
from dfarun.config.checks import validate
from dfarun.run.runner import run_records

SMALL = "model=3x50_tanh"
HISTORY_KEYS = {"epoch", "train_error", "train_loss", "test_error", "seconds"}
STOPS = {"converged", "max_epochs", "diverged"}


def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"  # where make_cfg points `store`


def snapshot(cfg, seeds) -> dict[int, tuple[int, int]]:
    """(inode, mtime_ns) of each seed's record: a rewrite (os.replace) changes the inode."""
    out = {}
    for s in seeds:
        st = store.record_path(cfg, s).stat()
        out[s] = (st.st_ino, st.st_mtime_ns)
    return out


# --- the record ---------------------------------------------------------------------------

def test_records_hold_config_history_and_provenance_one_file_per_seed(make_cfg, tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    # called from Python, not from a Hydra app: an earlier in-process app run leaves its config set
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    cfg = make_cfg(SMALL, "method=dfa", "seeds=[0,1,2]")
    records = run_records(cfg)

    assert [r["seed"] for r in records] == [0, 1, 2]
    runs = store_dir(tmp_path)
    names = sorted(os.listdir(runs))  # listdir shows dotfiles too: a left-over temp file would show
    names = [n for n in names if n not in ("live", "locks", "checkpoints")]  # the store's own folders stay
    diffs = [n for n in names if n.endswith(".diff")]  # a checkout with uncommitted changes: the code's diff
    names = [n for n in names if n not in diffs]
    assert names == sorted(store.record_path(cfg, s).name for s in (0, 1, 2))
    assert len(set(names)) == 3
    assert all(store.record_path(cfg, s).name.endswith(f"_seed{s}.json") for s in (0, 1, 2))
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]

    for seed, rec in zip((0, 1, 2), records):
        path = store.record_path(cfg, seed)
        assert path.stat().st_mode & 0o777 == 0o644
        assert json.loads(path.read_text()) == rec      # what run returns is what is on disk
        assert store.read(path) == rec

        # the resolved config (with the effective learning rate)
        conf = rec["config"]
        assert conf["model"] == {"name": "3x50_tanh", "label": "3x50 Tanh", "depth": 3, "width": 50, "activation": "tanh",
                                 "channels": [], "kernel": 5, "pool": 3, "pool_stride": 2}
        assert conf["method"] == {"name": "dfa"}
        assert conf["dataset"]["name"] == "synthetic" and conf["dataset"]["train_size"] == 256
        assert conf["max_epochs"] == 2 and conf["batch_size"] == 64 and conf["seeds"] == [0, 1, 2]
        assert conf["lr"] == pytest.approx(1e-3)   # lr: null -> the data set's rate, resolved
        assert "${" not in json.dumps(conf)        # interpolations resolved

        assert rec["seed"] == seed
        assert rec["format"] == store.FORMAT
        assert rec["key"] == store.experiment_key(cfg)
        assert rec["device"] == "cpu"
        assert rec["torch"] == torch.__version__
        assert "git_commit" in rec
        assert rec["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
        assert rec["stacked_seeds"] == 3
        # where it came from: when (UTC), where, from which command line (None: called from Python)
        created = dt.datetime.fromisoformat(rec["created_utc"])
        assert created.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=10)
        assert rec["host"] == platform.node() and rec["overrides"] is None
        assert rec["dfarun"] == importlib.metadata.version("dfarun")
        if rec["git_commit"] is not None:  # a checkout: git says whether its code had changes, shown beside
            assert isinstance(rec["git_dirty"], bool)
            assert (path.with_suffix(".diff").name in diffs) == rec["git_dirty"]
        else:
            assert rec["git_dirty"] is None and not diffs
        assert isinstance(rec["wall_seconds"], float) and rec["wall_seconds"] > 0

        assert rec["stop"] in STOPS
        hist = rec["history"]
        assert [h["epoch"] for h in hist] == list(range(1, rec["epochs"] + 1))
        assert 1 <= rec["epochs"] <= 2
        if rec["stop"] == "max_epochs":
            assert rec["epochs"] == 2
        for h in hist:
            assert set(h) == HISTORY_KEYS
            assert 0 <= h["train_error"] <= 100 and 0 <= h["test_error"] <= 100
            assert math.isfinite(h["train_loss"]) and h["train_loss"] > 0
            assert h["seconds"] >= 0
        # percentages of 256 training / 128 test examples
        for h in hist:
            assert h["train_error"] * 2.56 == pytest.approx(round(h["train_error"] * 2.56))
            assert h["test_error"] * 1.28 == pytest.approx(round(h["test_error"] * 1.28))
        assert rec["train_error"] == hist[-1]["train_error"]
        assert rec["test_error"] == hist[-1]["test_error"]

    # the seeds are different runs
    assert records[0]["history"] != records[1]["history"]


# --- skip-if-done -------------------------------------------------------------------------

def test_second_run_skips_finished_seeds_extra_seed_trains_alone_force_retrains(
        make_cfg, train_calls, caplog):
    caplog.set_level(logging.INFO, logger="dfarun")
    cfg = make_cfg(SMALL, "seeds=[0,1]")
    first = run_records(cfg)
    assert train_calls == [[0, 1]]
    before = snapshot(cfg, (0, 1))

    caplog.clear()
    again = run_records(cfg)
    assert train_calls == [[0, 1]]                  # nothing retrained
    assert again == first
    assert snapshot(cfg, (0, 1)) == before          # files untouched
    assert "skipping seeds [0, 1]" in caplog.text
    run_records(make_cfg(SMALL, "seeds=[0,1]", "save_weights=true"))  # the records stand: no weights, but words
    assert train_calls == [[0, 1]] and "seeds [0, 1] were trained without it and have no weights" in caplog.text

    caplog.clear()
    more = run_records(make_cfg(SMALL, "seeds=[0,1,2]"))
    assert train_calls[-1] == [2]                   # only the new seed
    assert len(train_calls) == 2
    assert [r["seed"] for r in more] == [0, 1, 2]
    assert more[:2] == first
    assert more[2]["stacked_seeds"] == 1
    assert snapshot(cfg, (0, 1)) == before
    assert "skipping seeds [0, 1]" in caplog.text

    forced = run_records(make_cfg(SMALL, "seeds=[0,1]", "force=true"))
    assert train_calls[-1] == [0, 1]
    after = snapshot(cfg, (0, 1))
    assert all(after[s][0] != before[s][0] for s in (0, 1))   # rewritten
    # same seeds, same numbers: training is deterministic
    for old, new in zip(first, forced):
        assert [h["train_loss"] for h in new["history"]] == pytest.approx(
            [h["train_loss"] for h in old["history"]], rel=1e-5)


def test_unreadable_or_foreign_record_is_retrained(make_cfg, train_calls):
    cfg = make_cfg(SMALL)
    path = store.record_path(cfg, 0)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "seed": 0, "hist')          # truncated: not a record
    rec = run_records(cfg)[0]
    assert train_calls == [[0]]
    assert store.read(path) == rec

    path.write_text(json.dumps({**rec, "format": store.FORMAT + 1}))  # another layout
    run_records(cfg)
    assert train_calls == [[0], [0]]
    assert store.read(path)["format"] == store.FORMAT


def test_runtime_keys_keep_the_record_a_changed_experiment_trains_anew(make_cfg, train_calls):
    run_records(make_cfg(SMALL, "device=cpu", "seeds=[0]"))
    assert train_calls == [[0]]
    # other device, data_dir and seed list: seed 0 is the same experiment and is skipped
    run_records(make_cfg(SMALL, "device=auto", "data_dir=/nonexistent/elsewhere", "seeds=[1,0]"))
    assert train_calls == [[0], [1]]
    # another learning rate is another experiment
    run_records(make_cfg(SMALL, "lr=0.002", "seeds=[0]"))
    assert train_calls == [[0], [1], [0]]


BASE = (SMALL, "method=dfa")


KEY_CHANGES = ["lr=0.002", "max_epochs=3", "model=1x800_tanh", "method=bp", "batch_size=32",
               "dataset.train_size=128", "model.activation=relu", "dataset.data_seed=7"]
RUNTIME = ["device=auto", "data_dir=/somewhere/else", "seeds=[0,4,9]", "force=true",
           "lr=0.001",   # explicitly the data set's rate: the same experiment as lr=null
           "seed_stack=1", "compile=false"]


def test_experiment_keys_change_the_record_file_and_runtime_keys_do_not(make_cfg):
    """Each override against one base config, composed once for all of them (a compose is ~0.1 s)."""
    base = store.record_path(make_cfg(*BASE), 0)
    for override in KEY_CHANGES:
        changed = store.record_path(make_cfg(*BASE, override), 0)
        assert changed != base, override
        assert changed.parent == base.parent, override
    for override in RUNTIME:
        assert store.record_path(make_cfg(*BASE, override), 0) == base, override


# --- validation -----------------------------------------------------------------------------

def _cuda_missing() -> str:
    """A CUDA device that does not exist here: cuda itself on a machine without a GPU."""
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize("override, key, shown", [
    ("max_epochs=0", "max_epochs", "0"),
    ("seeds=[]", "seeds", "[]"),
    ("lr=-1", "lr", "-1"),
    ("lr=0", "lr", "0"),
    ("device=tpu", "device", "tpu"),
    (f"device={_cuda_missing()}", "device", _cuda_missing()),
    ("batch_size=0", "batch_size", "0"),
    ("seed_stack=0", "seed_stack", "0"),
    ("seeds=[1,1]", "seeds", "[1, 1]"),
    ("seeds=[-1]", "seeds", "-1"),
    ("model.activation=softplus", "model.activation", "softplus"),
    ("model.depth=0", "model.depth", "0"),
    ("model.width=0", "model.width", "0"),
])
def test_bad_values_raise_one_line_config_error_and_write_nothing(
        make_cfg, tmp_path, train_calls, override, key, shown):
    cfg = make_cfg(SMALL, override)
    with pytest.raises(ConfigError) as info:
        run_records(cfg)
    msg = str(info.value)
    assert isinstance(info.value, DfarunError)
    assert "\n" not in msg
    assert msg.startswith(f"{key}=")
    assert shown in msg.split(": ", 1)[0]     # the bad value, next to its key
    assert train_calls == []
    assert not store_dir(tmp_path).exists()


# --- every shipped model x method composes -------------------------------------------------

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def test_config_groups_are_not_empty():
    assert len(MODELS) >= 10 and {"2x800_tanh", "1x800_tanh", "3x50_tanh"} <= set(MODELS)
    assert METHODS == ["bp", "dfa", "dfa_first", "fa", "ifa"]


@pytest.fixture(scope="module")
def method_nodes() -> dict:
    """Each shipped method's node as Hydra composes it (conf/method/<name>.yaml), composed once."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return {m: compose("config", overrides=[f"method={m}"]).method for m in METHODS}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_method_composes_and_validates(make_cfg, method_nodes, model):
    """Each model and each method composes; every model x method pair validates. The method
    group only names the rule (conf/method/*.yaml), so a pair is the model's config with the
    method's node put in: 13 + 5 composes instead of 65 (a compose is ~0.1 s)."""
    cfg = make_cfg(f"model={model}", tiny=False)
    assert cfg.model.name == model
    for method in METHODS:
        cfg.method = method_nodes[method]
        assert cfg.method.name == method
        if cfg.model.channels and method == "ifa":  # IFA's forward push is defined for MLPs only
            with pytest.raises(ConfigError, match="^method.name='ifa': not defined for conv nets"):
                validate(cfg)
            continue
        validate(cfg)
        assert store.record_path(cfg, 0).name.startswith(f"mnist_{model}_{method}_")
    # the file name promises the architecture: <depth>x<width>_<activation>, or conv_<activation>
    if cfg.model.channels:
        assert model == f"conv_{cfg.model.activation}"
    else:
        depth, width, activation = re.fullmatch(r"(\d+)x(\d+)_(\w+)", model).groups()
        assert (cfg.model.depth, cfg.model.width, cfg.model.activation) == (int(depth), int(width), activation)


# --- alignment tracking and the experiment key --------------------------------------------

def test_alignment_tracking_lands_in_the_history(make_cfg):
    [rec] = run_records(make_cfg("model=3x50_tanh", "method=dfa", "track_alignment=true", "align_every=2"))
    for row in rec["history"]:
        assert len(row["align_signal"]) == len(row["align_update"]) == 3  # one angle per hidden layer
    last = rec["history"][-1]["align_signal"]
    assert all(0 <= a < 90 for a in last)  # DFA's signal has aligned with back-propagation's
    [plain] = run_records(make_cfg("model=3x50_tanh", "method=dfa"))
    assert "align_signal" not in plain["history"][0]  # off: nothing measured, nothing stored


def test_the_key_ignores_settings_at_their_default(make_cfg):
    """A setting added later with a default that keeps old behaviour must not orphan old records."""
    from omegaconf import open_dict
    base = make_cfg("model=3x50_tanh")
    explicit = make_cfg("model=3x50_tanh", "schedule=constant", "align_every=100", "reg=none", "val=false")
    assert store.experiment_key(base) == store.experiment_key(explicit)
    older = base.copy()
    with open_dict(older):
        del older["freeze_first_epochs"], older["track_alignment"]  # as a record from before they existed
    assert store.experiment_key(older) == store.experiment_key(base)
    assert store.experiment_key(make_cfg("model=3x50_tanh", "val=true")) != store.experiment_key(base)
    assert store.experiment_key(make_cfg("model=3x50_tanh", "reg=dropout")) != store.experiment_key(base)
