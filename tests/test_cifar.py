"""CIFAR-10/100 loading from tiny pickled batches written in torchvision's on-disk format
(random pixels, labels chosen so that fine and coarse CIFAR-100 labels cannot be confused).
Nothing here touches the network."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dfarun.engine import data as dfdata

from helpers import CPU, assert_close


# --- CIFAR: pickled batches -----------------------------------------------------------------

def pickle_to(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_rows(rng, n):
    """n random images as CIFAR stores them: one uint8 row each, 1024 R, 1024 G, 1024 B."""
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return rows


def test_cifar10_from_pickled_batches(make_cfg, tmp_path, no_md5):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_rows, train_labels = cifar_rows(rng, 50), rng.integers(0, 10, size=50).tolist()
    train_rows[0, 0], train_rows[1, 1] = 0, 255  # training range exactly [0, 255]
    for i in range(5):  # data_batch_1..5, 10 images each
        part = slice(10 * i, 10 * (i + 1))
        pickle_to(folder / f"data_batch_{i + 1}", {
            "batch_label": f"training batch {i + 1} of 5", "data": train_rows[part],
            "labels": train_labels[part], "filenames": [f"img{j}.png" for j in range(10)]})
    test_rows, test_labels = cifar_rows(rng, 20), rng.integers(0, 10, size=20).tolist()
    test_rows[0, :3] = [0, 255, 128]
    pickle_to(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_rows,
                                      "labels": test_labels})
    pickle_to(folder / "batches.meta", {"label_names": [f"class{k}" for k in range(10)],
                                        "num_cases_per_batch": 10, "num_vis": 3072})

    cfg = make_cfg("dataset=cifar10", f"data_dir={tmp_path}", tiny=False)
    d = dfdata.load(cfg.dataset, cfg.data_dir, CPU)

    assert d.x_train.shape == (50, 3072) and d.x_test.shape == (20, 3072)
    assert d.features == 3072
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == train_labels  # batches 1..5, in order
    assert d.y_test.tolist() == test_labels
    assert int(d.y_train.max()) < cfg.dataset.classes == 10
    # the flattened vector is (C, H, W): exactly the pickled row, whose blocks are R, G, B
    assert_close(d.x_train, torch.from_numpy(train_rows).double() / 255)
    assert_close(d.x_test, torch.from_numpy(test_rows).double() / 255)
    assert d.x_test[0, :3].tolist() == pytest.approx([0.0, 1.0, 128 / 255], abs=1e-6)
    # channel G, pixel (h=2, w=5) sits at 1024 + 2 * 32 + 5
    assert d.x_test[3, 1024 + 2 * 32 + 5].item() == pytest.approx(
        test_rows[3, 1024 + 69] / 255, abs=1e-6)


def test_cifar100_uses_fine_labels(make_cfg, tmp_path, no_md5):
    rng = np.random.default_rng(4)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    split = {}
    for name, n in (("train", 50), ("test", 20)):
        rows = cifar_rows(rng, n)
        if name == "train":
            rows[0, :2] = [0, 255]  # training range exactly [0, 255]
        fine = rng.integers(20, 100, size=n).tolist()  # >= 20: cannot be coarse labels
        coarse = rng.integers(0, 20, size=n).tolist()
        split[name] = (rows, fine)
        pickle_to(folder / name, {"data": rows, "fine_labels": fine, "coarse_labels": coarse,
                                  "filenames": [f"img{j}.png" for j in range(n)]})
    pickle_to(folder / "meta", {"fine_label_names": [f"fine{k}" for k in range(100)],
                                "coarse_label_names": [f"coarse{k}" for k in range(20)]})

    cfg = make_cfg("dataset=cifar100", f"data_dir={tmp_path}", tiny=False)
    d = dfdata.load(cfg.dataset, cfg.data_dir, CPU)

    assert cfg.dataset.classes == 100
    assert d.x_train.shape == (50, 3072) and d.x_test.shape == (20, 3072)
    assert d.y_train.tolist() == split["train"][1]
    assert d.y_test.tolist() == split["test"][1]
    assert int(d.y_train.max()) < cfg.dataset.classes
    assert_close(d.x_train, torch.from_numpy(split["train"][0]).double() / 255)
    assert_close(d.x_test, torch.from_numpy(split["test"][0]).double() / 255)
