"""Data loading: MNIST from tiny files written in torchvision's on-disk format (CIFAR:
test_cifar.py), the offline error path, and the synthetic set. Nothing here touches the network."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from dfarun.engine import data as dfdata
from dfarun.errors import ConfigError, DfarunError
from dfarun.config.checks import validate

from helpers import CPU, assert_close, mnist_arrays, write_mnist


# --- MNIST: IDX files in <root>/MNIST/raw ---------------------------------------------------

def load(make_cfg, name, data_dir, *overrides):
    cfg = make_cfg(f"dataset={name}", f"data_dir={data_dir}", *overrides, tiny=False)
    return dfdata.load(cfg.dataset, cfg.data_dir, CPU)


def test_mnist_from_idx_files(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train, x_test, y_test = mnist_arrays(rng)
    write_mnist(tmp_path, x_train, y_train, x_test, y_test)

    d = load(make_cfg, "mnist", tmp_path)

    assert d.x_train.shape == (50, 784) and d.x_test.shape == (20, 784)
    assert d.features == 784
    assert d.x_train.dtype == d.x_test.dtype == torch.float32
    assert d.y_train.dtype == d.y_test.dtype == torch.int64
    assert torch.equal(d.y_train, torch.from_numpy(y_train).long())
    assert torch.equal(d.y_test, torch.from_numpy(y_test).long())
    # the training set spans 0..255, so min-max scaling is exactly pixel / 255, row-major
    assert d.x_train[0, 0].item() == 0.0
    assert d.x_train[1, 5 * 28 + 7].item() == pytest.approx(1.0, abs=1e-6)
    for i, r, c in [(3, 0, 0), (7, 13, 14), (49, 27, 27), (10, 2, 25)]:
        assert d.x_train[i, r * 28 + c].item() == pytest.approx(x_train[i, r, c] / 255, abs=1e-6)
        j = i % 20
        assert d.x_test[j, r * 28 + c].item() == pytest.approx(x_test[j, r, c] / 255, abs=1e-6)
    assert_close(d.x_train, torch.from_numpy(x_train.reshape(50, -1)).double() / 255)
    assert_close(d.x_test, torch.from_numpy(x_test.reshape(20, -1)).double() / 255)


def test_mnist_test_set_uses_training_range(make_cfg, tmp_path):
    rng = np.random.default_rng(1)
    # train pixels in [10, 200]; test pixels over the full byte range, so some fall outside
    x_train, y_train, x_test, y_test = mnist_arrays(rng, lo=10, hi=200)
    x_test[0, 0, :4] = [0, 10, 200, 255]
    write_mnist(tmp_path, x_train, y_train, x_test, y_test)

    d = load(make_cfg, "mnist", tmp_path)

    assert d.x_train.min().item() == 0.0
    assert d.x_train.max().item() == pytest.approx(1.0, abs=1e-6)
    expected_first = [(0 - 10) / 190, 0.0, 1.0, (255 - 10) / 190]
    assert d.x_test[0, :4].tolist() == pytest.approx(expected_first, abs=1e-6)
    # not rescaled by the test set's own range: values outside [0, 1] survive
    assert d.x_test.min().item() < 0 and d.x_test.max().item() > 1
    assert_close(d.x_train, (torch.from_numpy(x_train.reshape(50, -1)).double() - 10) / 190)
    assert_close(d.x_test, (torch.from_numpy(x_test.reshape(20, -1)).double() - 10) / 190)


def test_mnist_train_size_keeps_first_examples(make_cfg, tmp_path):
    rng = np.random.default_rng(2)
    x_train, y_train, x_test, y_test = mnist_arrays(rng, lo=10, hi=200)
    x_train[20, 0, 0], x_train[30, 0, 0] = 0, 255  # outside the first 7: must not set the range
    write_mnist(tmp_path, x_train, y_train, x_test, y_test)

    d = load(make_cfg, "mnist", tmp_path, "dataset.train_size=7")

    assert d.x_train.shape == (7, 784) and d.y_train.shape == (7,)
    assert d.x_test.shape == (20, 784) and d.y_test.shape == (20,)  # the test set is untouched
    assert torch.equal(d.y_train, torch.from_numpy(y_train[:7]).long())
    # the first 7 images, scaled by their own range [10, 200] (the kept training set)
    assert_close(d.x_train, (torch.from_numpy(x_train[:7].reshape(7, -1)).double() - 10) / 190)
    assert_close(d.x_test, (torch.from_numpy(x_test.reshape(20, -1)).double() - 10) / 190)


# --- MNIST files that are there but wrong: named when loaded, before anything trains ------------

def _rewrite(path: Path, edit) -> None:
    path.write_bytes(edit(path.read_bytes()))


MNIST_DAMAGE = [  # (file, what is done to it, words the one line must hold)
    # a download cut short, or another file: torchvision cannot read it
    ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x01" + b[4:], ["truncated or corrupt"]),
    ("train-images-idx3-ubyte", lambda b: b[:1000], ["truncated or corrupt", "input of size 984"]),
    ("t10k-images-idx3-ubyte", lambda b: b"", ["truncated or corrupt"]),
    # files that parse, but do not hold MNIST: what every data set must hold (data._check_examples)
    ("train-labels-idx1-ubyte", lambda b: b[:7] + bytes([49]) + b[8:-1], ["training files hold 50 examples",
                                                                           "and 49 labels"]),
    ("train-labels-idx1-ubyte", lambda b: b[:-1] + bytes([255]), ["labels in [0, 255]", "labels in [0, 9]"]),
    ("train-images-idx3-ubyte", lambda b: struct.pack(">IIII", 2051, 50, 10, 10) + b[16:16 + 5000],
     ["examples of 100 values", "of 784 values each"]),
]


@pytest.mark.parametrize("name, damage, words", MNIST_DAMAGE, ids=[" ".join(c[2])[:40] for c in MNIST_DAMAGE])
def test_damaged_mnist_files_are_refused_when_loaded(make_cfg, tmp_path, name, damage, words):
    write_mnist(tmp_path, *mnist_arrays(np.random.default_rng(0)))
    path = tmp_path / "MNIST" / "raw" / name
    _rewrite(path, damage)
    before = path.read_bytes()
    cfg = make_cfg("dataset=mnist", f"data_dir={tmp_path}", tiny=False)
    with pytest.raises(ConfigError) as info:
        dfdata.load(cfg.dataset, cfg.data_dir, CPU)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data_dir='{tmp_path}': the mnist ")
    assert "delete" in message, message
    for w in words:
        assert w in message, message
    assert path.read_bytes() == before  # never deleted nor downloaded over


def test_mnist_smaller_than_its_train_size_or_val_split(make_cfg, tmp_path):
    write_mnist(tmp_path, *mnist_arrays(np.random.default_rng(0)))  # 50 training images
    with pytest.raises(ConfigError, match=r"dataset.train_size=60: expected null or at most 50"):
        load(make_cfg, "mnist", tmp_path, "dataset.train_size=60")
    data = load(make_cfg, "mnist", tmp_path)
    with pytest.raises(ConfigError, match="val=True: needs more than 10000 training examples; the data hold 50"):
        data.hold_out(10_000)


# --- missing data set, offline --------------------------------------------------------------

DATASET_CLASSES = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10,
                   "cifar100": datasets.CIFAR100}


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_dataset_offline_fails_cleanly(make_cfg, tmp_path, monkeypatch, name):
    calls = []

    def offline_download(self):
        # what the real download does before it reaches the network: make its folders; then
        # fail as torchvision's MNIST does, one line per mirror, the reason on the last ones
        calls.append(self.root)
        os.makedirs(self.raw_folder if name == "mnist" else self.root, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a.example/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known (offline)>\n"
                           "Tried http://b.example/, got:\n<urlopen error [Errno -2] Name or service not known (offline)>\n")

    # the download stands in for the network; torchvision's class and dfarun's code are real
    monkeypatch.setattr(DATASET_CLASSES[name], "download", offline_download)
    (tmp_path / "existing").mkdir()
    data_dir = tmp_path / "existing" / "new" / "sub"

    with pytest.raises(DfarunError) as info:
        load(make_cfg, name, data_dir)

    assert calls, "the download was never attempted"
    folder, files = dfdata.EXPECTED_FILES[name]
    message = str(info.value)
    assert files[0] in message and files[-1] in message
    # the whole reason, once; where to put the files; what data_dir= must name: the folder above
    assert "download failed (urlopen error [Errno -2] Name or service not known (offline));" in message
    assert message.count("Name or service") == 1
    assert f"in {data_dir / folder}/ (data_dir= names the folder above {folder.split('/')[0]}/)" in message
    assert "\n" not in message and len(message.replace(str(data_dir), "")) < 260, message  # short
    assert not (tmp_path / "existing" / "new").exists()  # every directory it made is gone
    assert (tmp_path / "existing").is_dir()  # and what was there before is left alone


def test_missing_dataset_keeps_unrelated_files(make_cfg, tmp_path, monkeypatch):
    def offline_download(self):
        os.makedirs(self.raw_folder, exist_ok=True)
        (Path(self.raw_folder) / "train-images-idx3-ubyte.gz.part").write_bytes(b"x")
        raise RuntimeError("offline")

    monkeypatch.setattr(datasets.MNIST, "download", offline_download)
    with pytest.raises(DfarunError):
        load(make_cfg, "mnist", tmp_path / "d")
    # a folder that is no longer empty is not removed (nor its contents)
    assert (tmp_path / "d" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz.part").exists()


# --- synthetic ------------------------------------------------------------------------------

def synthetic(make_cfg, *overrides):
    cfg = make_cfg("dataset=synthetic", "dataset.train_size=60", "dataset.test_size=30",
                   "dataset.features=12", *overrides, tiny=False)
    return cfg, dfdata.load(cfg.dataset, cfg.data_dir, CPU)


def test_synthetic_deterministic_and_seeded(make_cfg):
    _, a = synthetic(make_cfg, "dataset.data_seed=7")
    torch.manual_seed(123)  # the global RNG must not matter
    _, b = synthetic(make_cfg, "dataset.data_seed=7")
    _, c = synthetic(make_cfg, "dataset.data_seed=8")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_test, c.x_test)


def test_synthetic_shapes_and_range(make_cfg):
    cfg, d = synthetic(make_cfg)
    assert d.x_train.shape == (60, 12) and d.y_train.shape == (60,)
    assert d.x_test.shape == (30, 12) and d.y_test.shape == (30,)
    assert d.features == 12
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    for x in (d.x_train, d.x_test):
        assert x.min().item() >= 0 and x.max().item() <= 1
    assert d.x_train.min().item() == 0 and d.x_train.max().item() == pytest.approx(1, abs=1e-6)
    for y in (d.y_train, d.y_test):
        assert 0 <= y.min().item() and y.max().item() < cfg.dataset.classes
    assert len(d.y_train.unique()) > 1


def test_synthetic_train_size_override(make_cfg):
    _, d = synthetic(make_cfg, "dataset.train_size=17", "dataset.features=5")
    assert d.x_train.shape == (17, 5) and d.y_train.shape == (17,)
    assert d.x_test.shape == (30, 5)
