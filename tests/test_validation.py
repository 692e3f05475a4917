"""Bad input gets a clear answer: one line naming the key, the bad value and what is allowed;
exit code 2; no traceback; nothing written.

Three tables: errors through the real console script (a subprocess each: an unknown key, and
a bad value in a -m sweep); the same kinds and more through `cli.check_args` in-process (the
same code path, without a second's start-up each); bad values through `runner.run` on a
composed config. Then the folders and files: data_dir, store, a corrupt data set.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dfarun.cli import main as cli
from dfarun.run import runner
from dfarun.config.schema import CONF_DIR
from dfarun.errors import ConfigError, DfarunError
from dfarun.config.checks import validate

from helpers import SCRIPT_TINY, dfarun, mnist_arrays, run_dfarun, write_mnist


ONE_LINE = "dfarun: error: "


def assert_one_line(err: Exception | str, key: str, *words: str) -> str:
    text = str(err)
    assert "\n" not in text and text.startswith((f"{key}=", f"{key}: not an override")), text
    for w in words:
        assert w in text, text
    return text


# --- the console script: Hydra's compose errors, and a sweep -----------------------------------

CLI_CASES = [  # (arguments, key, words the line must hold): the installed script, a run and a sweep;
    # every other mistake is checked in-process below (CHECK_ARGS_CASES), through the same check_args
    (["foo=1"], "foo", ["unknown key", "max_epochs", "+foo="]),
    (["-m", "method=bp,fa", "reg=none,dropout", "reg.p_hidden=1.5"], "reg.p_hidden", ["[0, 1)"]),
]


@pytest.mark.parametrize("args, key, words", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, key, words):
    runs = tmp_path / "runs"
    flags = [a for a in args if a.startswith("-")]  # the bad overrides come last: they win
    out = dfarun(tmp_path, *flags, *SCRIPT_TINY, "max_epochs=1", f"store={runs}", *[a for a in args if a not in flags])
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(ONE_LINE)
    assert_one_line(lines[0][len(ONE_LINE):], key, *words)
    assert "Traceback" not in out.stdout + out.stderr
    assert os.listdir(tmp_path) == []  # no store, no sweep dir, no outputs/


def test_cfg_shows_a_bad_value_rather_than_refusing_it(tmp_path):
    out = run_dfarun(tmp_path, "--cfg", "job", "max_epochs=0")
    assert out.code == 0 and "max_epochs: 0" in out.out, out.err
    assert os.listdir(tmp_path) == []


# --- the same pre-flight in-process: compose errors and values -----------------------------------

CHECK_ARGS_CASES = [
    (["max_epochs=abc"], "max_epochs", ["'abc'", "expected an int"]),
    (["seeds=5"], "seeds", ["expected a list of ints"]),
    (["lr=fast"], "lr", ["'fast'", "expected a float in (0, 3.4e38] or null"]),
    (["compile=maybe"], "compile", ["'maybe'", "expected auto, true or false"]),
    (["model=nope"], "model", ["'nope'", "no such option", "2x800_tanh", "7x240_tanh"]),
    (["max_epochs"], "max_epochs", ["expected key=value"]),
    (["-m", "method=bp,fa", "model=1x800_tanh,nope"], "model", ["no such option"]),
    (["model.foo=1"], "model.foo", ["unknown key", "width"]),
    (["+foo=1"], "foo", ["unknown key"]),
    (["dataset.train_size=abc"], "dataset.train_size", ["expected an int >= 1 or null"]),
    (["seeds=[a,1]"], "seeds", ["expected a list of ints"]),
    (["max_epochs=1.5"], "max_epochs", ["expected an int"]),
    (["max_epochs=null"], "max_epochs", ["expected an int"]),
    (["method=foo"], "method", [", ".join(sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml")))]),
    (["experiment=nope"], "experiment", ["no such option", "table1"]),  # optional group: Hydra skips it
    (["row=nope"], "row", ["no such option", "2x800_tanh_do"]),
    (["hydra/launcher=nope"], "hydra/launcher", ["no such option", "basic"]),
    (["method=bp,fa"], "method", ["-m"]),
    (["seeds=[0,1"], "seeds", ["expected key=value"]),
    (["dataset.lr=???"], "dataset.lr", ["missing value", "expected a float"]),
    (["~model"], "model", ["missing value", "2x800_tanh"]),
    (["data_dir=${oc.env:DFARUN_NO_SUCH_VARIABLE}"], "data_dir", ["cannot be resolved", "DFARUN_NO_SUCH"]),
    (["-m", "experiment=fig3", "max_epochs=0"], "max_epochs", ["expected an int >= 1"]),
    (["device=cuda:7"], "device", ["no such CUDA device"]),
    # reg.name says what the run did, in records and tables: it must match reg's values
    (["reg.name=nope"], "reg.name", ["one of none, dropout, adversarial"]),
    (["reg.name=dropout"], "reg.name", ["dropout off", "expected none", "reg=dropout alone"]),
    (["reg=dropout", "reg.name=none"], "reg.name", ["dropout on", "expected dropout"]),
    (["reg=adversarial", "reg.p_hidden=0.5"], "reg.name", ["together"]),
]


@pytest.mark.parametrize("args, key, words", CHECK_ARGS_CASES, ids=[" ".join(c[0]) for c in CHECK_ARGS_CASES])
def test_check_args_one_line(args, key, words):
    if args == ["device=cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(DfarunError) as info:
        cli.check_args([*args, "dataset=synthetic", "dataset.train_size=64", "dataset.test_size=16",
                        "dataset.features=4"] if args[0] != "-m" else args)
    assert_one_line(info.value, key, *words)


def test_check_args_expands_a_sweep_and_accepts_good_input():
    cfgs = cli.check_args(["-m", "experiment=fig3", "reg=none,dropout", "device=cpu"])
    # hydra.sweeper.params (method: bp,dfa) times the command line's sweep
    assert sorted((c.method.name, c.reg.name) for c in cfgs) == [
        ("bp", "dropout"), ("bp", "none"), ("dfa", "dropout"), ("dfa", "none")]
    assert cli.check_args(["--help"]) == []


# --- values: runner.run on a composed config ----------------------------------------------------

RUN_CASES = [  # (overrides, key): one per mechanism; every key's own: test_config_schema.py
    (["max_epochs=0"], "max_epochs"),                   # a bound
    (["lr=nan"], "lr"),                                 # NaN fails every bound
    (["seeds=[1,1]"], "seeds"),                         # a list's
    (["schedule=cosine"], "schedule"),                  # choices
    (["schedule=step"], "halve_every"),                 # rules across keys: step needs its period,
    (["halve_every=50"], "halve_every"),                # which is read only with schedule=step
    (["val=true"], "val"),  # 256 training examples cannot give up 10,000
    (["dataset.features=null"], "dataset.features"),    # synthetic data needs its sizes
    (["device=gpu"], "device"),
    (["+foo=1"], "foo"),
    (["dataset.lr=???"], "dataset.lr"),
]


@pytest.mark.parametrize("overrides, key", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_run_refuses_bad_values_and_writes_nothing(make_cfg, tmp_path, overrides, key):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        runner.run(cfg)
    assert_one_line(info.value, key, "expected" if key != "val" else "needs more than")
    assert not (tmp_path / "runs").exists()


def test_absurdly_many_epochs_are_fine(make_cfg):
    validate(make_cfg("max_epochs=1000000000"))


# --- folders: store and data_dir ------------------------------------------------------------------

def test_store_that_is_a_file_or_under_one(make_cfg, tmp_path):
    a_file = tmp_path / "records.txt"
    a_file.write_text("mine")
    for store in (a_file, a_file / "runs"):
        with pytest.raises(ConfigError) as info:
            runner.run(make_cfg(f"store={store}"))
        assert_one_line(info.value, "store", str(store), "is a file")
    assert a_file.read_text() == "mine"


def test_data_dir_that_is_a_file_or_cannot_be_made(make_cfg, tmp_path):
    a_file = tmp_path / "data.tar"
    a_file.write_bytes(b"not a folder")
    for data_dir in (a_file, a_file / "sub"):  # under a regular file: unwritable even for root
        with pytest.raises(ConfigError) as info:
            runner.run(make_cfg("dataset=mnist", f"data_dir={data_dir}", tiny=False))
        assert_one_line(info.value, "data_dir", str(data_dir), "is a file", "mnist")
    assert not (tmp_path / "runs").exists()
    assert a_file.read_bytes() == b"not a folder"


def test_data_dir_not_writable_when_a_download_is_needed(make_cfg, tmp_path, monkeypatch):
    # tests run as root, which chmod does not stop: ask os.access to say what it says to a user
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == read_only else real_access(p, mode))
    for data_dir in (read_only, read_only / "new"):
        with pytest.raises(ConfigError) as info:
            validate(make_cfg("dataset=cifar10", f"data_dir={data_dir}", tiny=False))
        assert_one_line(info.value, "data_dir", f"{read_only} is not writable", "cifar10")


def test_read_only_data_dir_that_holds_the_files_is_fine(make_cfg, tmp_path, monkeypatch):
    write_mnist(tmp_path, *mnist_arrays(np.random.default_rng(0)))
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # nothing is writable
    validate(make_cfg("dataset=mnist", f"data_dir={tmp_path}", f"store={tmp_path}", tiny=False))


def test_synthetic_reads_no_data_dir(make_cfg, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("")
    validate(make_cfg(f"data_dir={a_file / 'sub'}"))


# --- a corrupt data set: say which, ask the user to delete it, delete nothing ---------------------

def test_truncated_mnist_file_is_refused_and_kept(make_cfg, tmp_path):
    write_mnist(tmp_path, *mnist_arrays(np.random.default_rng(0)))
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:1000])
    before = sorted(p.name for p in bad.parent.iterdir())

    cfg = make_cfg("dataset=mnist", f"data_dir={tmp_path}", "compile=false", "max_epochs=1", tiny=False)
    with pytest.raises(ConfigError) as info:
        runner.run(cfg)
    assert_one_line(info.value, "data_dir", "mnist files in MNIST/raw/", "truncated or corrupt", "delete them")
    assert sorted(p.name for p in bad.parent.iterdir()) == before and len(bad.read_bytes()) == 1000
    assert not (tmp_path / "runs").exists()


def test_corrupt_cifar_is_refused_and_kept(make_cfg, tmp_path):
    """CIFAR comes as one archive: a file that fails its md5 sum or does not unpickle means the
    folder again (MNIST's files are each checked, and named: test_data.py)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"not": "cifar"}, f)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    cfg = make_cfg("dataset=cifar10", f"data_dir={tmp_path}", "compile=false", tiny=False)
    with pytest.raises(ConfigError) as info:
        runner.run(cfg)
    assert_one_line(info.value, "data_dir", "cifar10 files in cifar-10-batches-py/", "truncated or corrupt",
                    "delete them")
    assert len(list(folder.iterdir())) == 7
    assert not (tmp_path / "runs").exists()
