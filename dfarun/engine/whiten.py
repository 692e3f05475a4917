"""ZCA whitening for the conv nets (docs/protocol.md: fitted on the training set, matrices cached).

x -> (x - μ) Z with Z = U diag(1/sqrt(λ + ε)) Uᵀ from the eigen-decomposition of the training
set's covariance, so the whitened training set has (nearly) identity covariance while staying
as close to the original pixels as any whitening can. ε (dataset.zca_eps, pixels in [0, 1])
keeps the near-zero eigen-directions from being blown up into noise.

Fitting CIFAR's 3072 x 3072 covariance costs ~10^12 FLOPs plus an eigen-decomposition, so
(μ, Z) is cached next to the data, one file per data set and training set. A file is used
only when it is whole and was fitted on exactly these training examples with this ε (a
SHA-1 of the examples' bytes); anything else is refitted and rewritten, never used as is.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor

from dfarun.engine.data import Data
from dfarun.errors import interrupted
from dfarun.atomic import atomic_save

log = logging.getLogger("dfarun")

CACHE_DIR = "dfarun-zca"  # under data_dir, beside torchvision's folders
FORMAT = 1


def fit(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(μ [D], Z [D, D]) for x [N, D]: covariance in float32, eigen-decomposition in float64."""
    mean = x.mean(0)
    xc = x - mean
    cov = (xc.T @ xc).double() / x.shape[0]
    eigenvalues, U = torch.linalg.eigh(cov)
    Z = (U * (eigenvalues.clamp_min(0) + eps).rsqrt()) @ U.T
    return mean, Z.to(x.dtype)


def fingerprint(x: Tensor, eps: float) -> str:
    """What a cached fit must match: the training examples, bit for bit, and ε."""
    h = hashlib.sha1(f"{tuple(x.shape)} {x.dtype} eps={eps!r}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_fit(x: Tensor, eps: float, cache_dir: Path | None, name: str) -> tuple[Tensor, Tensor]:
    """`fit`, through the cache in cache_dir (None: no cache)."""
    if cache_dir is None:
        return fit(x, eps)
    key = fingerprint(x, eps)
    path = Path(cache_dir).expanduser() / f"{name}-{key[:12]}.pt"
    loaded = _load(path, key, x.shape[1])
    if loaded is not None:
        log.info(f"ZCA whitening: using {path}")
        return tuple(t.to(x.device, x.dtype) for t in loaded)
    log.info(f"ZCA whitening: fitting on {x.shape[0]:,} training examples (cached in {path.parent}/)")
    mean, Z = fit(x, eps)
    try:
        atomic_save(path, {"format": FORMAT, "fingerprint": key, "mean": mean.cpu(), "zca": Z.cpu()})
    except OSError as err:  # a read-only data_dir still trains; it only refits next time
        log.warning(f"ZCA whitening: could not cache in {path.parent} ({err.strerror}); it is refitted each run")
    return mean, Z


def _load(path: Path, key: str, dim: int) -> tuple[Tensor, Tensor] | None:
    """The cached (μ, Z) when the file is whole, current and fitted on these examples."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        mean, Z = saved["mean"], saved["zca"]
        ok = (saved["format"] == FORMAT and saved["fingerprint"] == key and mean.shape == (dim,)
              and Z.shape == (dim, dim) and bool(torch.isfinite(Z).all() and torch.isfinite(mean).all()))
    except Exception as err:  # truncated, foreign or from another version: refit
        if interrupted(err):  # Ctrl-C inside torch's C++ reader: the user wants out, not a refit
            raise
        log.warning(f"ZCA whitening: ignoring unreadable cache {path} ({type(err).__name__}); refitting")
        return None
    if not ok:
        log.warning(f"ZCA whitening: ignoring stale cache {path}; refitting")
        return None
    return mean, Z


def whiten(data: Data, eps: float, cache_dir: Path | None, name: str) -> Data:
    """Every split whitened with the fit on data.x_train (after any validation hold-out)."""
    mean, Z = cached_fit(data.x_train, eps, cache_dir, name)
    apply = lambda x: None if x is None else (x - mean) @ Z
    return Data(apply(data.x_train), data.y_train, apply(data.x_test), data.y_test,
                apply(data.x_val), data.y_val, data.shape)
