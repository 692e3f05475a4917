"""Data sets as whole tensors on the training device.

Each loader returns the raw training and test sets on the CPU (uint8 pixels for the real
sets); `load` then moves them to the device once, converts to float32 once, and min-max
scales with the training set's range. The step loop indexes these tensors directly: no
DataLoader, no per-step copies from host memory.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from dfarun.engine.hyp import IMAGE_SHAPES
from dfarun.errors import ConfigError, DfarunError, check, check_folder

log = logging.getLogger("dfarun")


@dataclass
class Data:
    x_train: Tensor  # [N, D] float32 in [0, 1]
    y_train: Tensor  # [N] int64
    x_test: Tensor
    y_test: Tensor
    x_val: Tensor | None = None  # held out from the end of the training set (val=true)
    y_val: Tensor | None = None
    shape: tuple[int, int, int] | None = None  # (C, H, W) of one example when it is an image

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    def evaluation(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The sets scored after every epoch, by name."""
        sets = {"val": (self.x_val, self.y_val)} if self.x_val is not None else {}
        return sets | {"test": (self.x_test, self.y_test)}

    def hold_out(self, n: int) -> Data:
        """Move the last n training examples to a validation set."""
        if n >= len(self.y_train):  # data files smaller than the data set's published size
            raise ConfigError("val", True, f"needs more than {n} training examples; the data hold {len(self.y_train)}")
        return Data(self.x_train[:-n], self.y_train[:-n], self.x_test, self.y_test,
                    self.x_train[-n:], self.y_train[-n:], self.shape)


Raw = tuple[Tensor, Tensor, Tensor, Tensor]


# --- real data sets, through torchvision's own classes -------------------------------------

EXPECTED_FILES = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}


def check_data_dir(name: str, data_dir: str) -> None:
    """At start, before anything is written: data_dir holds the data set (it may be read-only
    then) or is a folder it can be downloaded into. The synthetic set reads nothing."""
    if name not in EXPECTED_FILES:
        return
    folder, files = EXPECTED_FILES[name]
    root = Path(data_dir).expanduser()
    there = all((root / folder / f).is_file() for f in files)
    check_folder("data_dir", data_dir, f"that holds {name} ({', '.join(files)} in {folder}/) or one "
                                       f"it can be downloaded into", write=not there)


def _torchvision(name: str, data_dir: str, train: bool):
    """Open one split; download into data_dir if it is missing; one-line error if that fails."""
    from torchvision import datasets
    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root = Path(data_dir).expanduser()
    folder, files = EXPECTED_FILES[name]
    try:
        return cls(root=str(root), train=train, download=False)
    except Exception as err:  # missing, failed its checksum, or unreadable
        if all((root / folder / f).is_file() for f in files):  # there but bad: never download over it
            # (torchvision checks the files' shapes, and CIFAR's md5; both come as archives,
            # so a bad file means the folder again)
            raise ConfigError("data_dir", data_dir, f"the {name} files in {folder}/ are truncated or corrupt "
                                                    f"({_first_line(err)}); delete them and rerun to download "
                                                    f"them again") from None
    created = [p for p in [root, *(root / folder).parents, root / folder] if not p.exists()]
    log.info(f"{name}: not in {root / folder}/; downloading it there")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cls(root=str(root), train=train, download=True)
    except Exception as err:  # offline, proxy, disk full: all mean the same to the user
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()  # leave nothing behind but what was there: only empty dirs we made
        # the files go in <data_dir>/<folder>/: data_dir= names the folder above <folder>
        raise DfarunError(f"dataset={name}: download failed ({_reason(err)}); put {_listing(files)} in "
                          f"{root / folder}/ (data_dir= names the folder above {folder.split('/')[0]}/)") from None


def _listing(files: list[str]) -> str:
    """File names for a message, a numbered run shortened: data_batch_1 ... data_batch_5."""
    numbered = [f for f in files if f[-1].isdigit()]
    if len(numbered) > 2:
        files = [f"{numbered[0]} ... {numbered[-1]}", *(f for f in files if f not in numbered)]
    return ", ".join(files)


def _reason(err: Exception) -> str:
    """Why a download failed, whole: torchvision's MNIST error is one line per mirror tried
    ("Tried <url>, got:" / "<urlopen error ...>"), its first line only names the file."""
    lines = [line.strip().strip("<>").rstrip(":") for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines[1:] if not line.startswith("Tried ")]
    reasons = list(dict.fromkeys(causes or lines[:1])) or [type(err).__name__]
    return "; ".join(reasons)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _mnist(cfg: DictConfig, data_dir: str) -> Raw:
    splits = [_torchvision("mnist", data_dir, train) for train in (True, False)]
    return tuple(t for s in splits for t in (s.data.reshape(len(s.data), -1), s.targets.long()))


def _cifar(cfg: DictConfig, data_dir: str) -> Raw:
    out = []
    for train in (True, False):
        s = _torchvision(cfg.name, data_dir, train)
        x = torch.from_numpy(s.data).permute(0, 3, 1, 2).reshape(len(s.data), -1)  # (C, H, W) order
        out += [x, torch.as_tensor(s.targets, dtype=torch.long)]
    return tuple(out)


# --- synthetic: noisy class prototypes, fixed by data_seed --------------------------------

SYNTHETIC_GRID = 4  # image prototypes: random on a 4x4 grid, upsampled smoothly to H x W


def _synthetic(cfg: DictConfig, data_dir: str) -> Raw:
    gen = torch.Generator().manual_seed(cfg.data_seed)
    if cfg.get("shape"):  # images: coarse patterns, so that classes survive pooling as in real photos
        c, h, w = cfg.shape
        coarse = torch.rand(cfg.classes, c, SYNTHETIC_GRID, SYNTHETIC_GRID, generator=gen)
        prototypes = F.interpolate(coarse, size=(h, w), mode="bilinear").flatten(1)
    else:
        prototypes = torch.rand(cfg.classes, cfg.features, generator=gen)
    out = []
    for n in (cfg.train_size, cfg.test_size):
        y = torch.randint(cfg.classes, (n,), generator=gen)
        x = (prototypes[y] + cfg.noise * torch.randn(n, cfg.features, generator=gen)).clamp(0, 1)
        out += [x, y]
    return tuple(out)


def image_shape(cfg: DictConfig) -> tuple[int, int, int] | None:
    """A data set's image shape (flattened in this order); synthetic sets may declare one."""
    shape = IMAGE_SHAPES.get(cfg.name) or cfg.get("shape")
    return tuple(shape) if shape else None


LOADERS: dict[str, Callable[[DictConfig, str], Raw]] = {
    "mnist": _mnist,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "synthetic": _synthetic,
}


def load(cfg: DictConfig, data_dir: str, device: torch.device) -> Data:
    x_train, y_train, x_test, y_test = LOADERS[cfg.name](cfg, data_dir)
    _check_examples(cfg, data_dir, ((x_train, y_train), (x_test, y_test)))
    x_train, y_train = x_train[: cfg.train_size], y_train[: cfg.train_size]  # train_size null: all
    x_train, x_test = (x.to(device).float() for x in (x_train, x_test))
    lo, hi = x_train.min(), x_train.max()
    scale = 1.0 / (hi - lo).clamp_min(1e-12)
    return Data((x_train - lo) * scale, y_train.to(device), (x_test - lo) * scale, y_test.to(device),
                shape=image_shape(cfg))


def _check_examples(cfg: DictConfig, data_dir: str, splits) -> None:
    """What any data set's files must hold, whichever loader read them (a file that does not
    even parse is the loader's error): as many labels as examples, each example of the data
    set's size, labels below its class count, and train_size examples at least."""
    shape = image_shape(cfg)
    size = math.prod(shape) if shape else cfg.features
    for (x, y), split in zip(splits, ("training", "test")):
        labels = (int(y.min()), int(y.max())) if len(y) else ()
        check(len(x) == len(y) > 0 and x.shape[1:].numel() == size and 0 <= labels[0] <= labels[1] < cfg.classes,
              "data_dir", data_dir, f"the {cfg.name} {split} files hold {len(x)} examples of {x.shape[1:].numel()} "
                                    f"values and {len(y)} labels in {list(labels)}; expected as many labels as "
                                    f"examples, of {size} values each, labels in [0, {cfg.classes - 1}]: delete the "
                                    f"files and rerun to download them again")
    n = len(splits[0][1])
    check((cfg.train_size or 0) <= n, "dataset.train_size", cfg.train_size,
          f"expected null or at most {n}: the {cfg.name} files in {data_dir} hold {n} training examples")
