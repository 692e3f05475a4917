"""ZCA whitening: identity covariance on its training data, and a cache that is never trusted blindly."""
from __future__ import annotations

import logging

import pytest
import torch

from dfarun.engine import whiten
from dfarun.engine.data import Data


def correlated(n: int = 2000, d: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.rand(d, d, generator=g)  # strongly correlated features in [0, ~d]
    return torch.rand(n, d, generator=g) @ mix / d


def test_zca_gives_identity_covariance_on_its_training_data():
    x = correlated()
    mean, Z = whiten.fit(x, eps=1e-9)
    w = (x - mean) @ Z
    torch.testing.assert_close(w.mean(0), torch.zeros(24), atol=1e-4, rtol=0)
    torch.testing.assert_close(w.T @ w / len(w), torch.eye(24), atol=2e-3, rtol=0)
    torch.testing.assert_close(Z, Z.T, atol=1e-4, rtol=0)  # ZCA: symmetric, the closest whitening to x


def test_eps_damps_the_weak_directions_only():
    x = correlated()
    cov = lambda w: w.T @ w / len(w)
    eigenvalues = torch.linalg.eigvalsh(cov(x - x.mean(0)).double())
    mean, Z = whiten.fit(x, eps=1e-2)
    damped = torch.linalg.eigvalsh(cov((x - mean) @ Z).double())
    torch.testing.assert_close(damped, (eigenvalues / (eigenvalues + 1e-2)), atol=2e-3, rtol=0)


def test_whiten_applies_the_training_fit_to_every_split():
    x = correlated(600)
    data = Data(x[:400], torch.zeros(400), x[500:], torch.zeros(100), x[400:500], torch.zeros(100), shape=(1, 4, 6))
    out = whiten.whiten(data, 1e-9, None, "synthetic")
    mean, Z = whiten.fit(x[:400], 1e-9)
    for got, raw in ((out.x_train, x[:400]), (out.x_val, x[400:500]), (out.x_test, x[500:])):
        torch.testing.assert_close(got, (raw - mean) @ Z)
    assert out.shape == (1, 4, 6)


def test_cache_round_trips_and_is_used(tmp_path, monkeypatch):
    x = correlated()
    first = whiten.cached_fit(x, 1e-3, tmp_path, "cifar10")
    files = list(tmp_path.glob("cifar10-*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(whiten, "fit", lambda *a: pytest.fail("refitted despite a valid cache"))
    second = whiten.cached_fit(x, 1e-3, tmp_path, "cifar10")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "stale", "wrong_shape", "nan"])
def test_a_bad_cache_is_refitted_never_used(tmp_path, caplog, damage):
    x = correlated()
    good = whiten.cached_fit(x, 1e-3, tmp_path, "cifar10")
    path = next(tmp_path.glob("cifar10-*.pt"))
    saved = torch.load(path, weights_only=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_text("not a tensor file")
    else:
        if damage == "stale":  # same name, fitted on other examples (or by another version)
            saved["fingerprint"] = "0" * 40
        elif damage == "wrong_shape":
            saved["zca"] = saved["zca"][:3]
        else:
            saved["zca"][0, 0] = float("nan")
        torch.save(saved, path)
    with caplog.at_level(logging.WARNING, logger="dfarun"):
        again = whiten.cached_fit(x, 1e-3, tmp_path, "cifar10")
    assert "refitting" in caplog.text
    for a, b in zip(good, again):
        torch.testing.assert_close(a, b)
    assert whiten._load(path, whiten.fingerprint(x, 1e-3), x.shape[1]) is not None  # rewritten whole


def test_other_examples_or_eps_get_their_own_fit(tmp_path):
    x = correlated()
    whiten.cached_fit(x, 1e-3, tmp_path, "cifar10")
    whiten.cached_fit(x[:1000], 1e-3, tmp_path, "cifar10")  # train_size or val changed
    whiten.cached_fit(x, 1e-2, tmp_path, "cifar10")
    assert len(list(tmp_path.glob("cifar10-*.pt"))) == 3


def test_unwritable_cache_still_whitens(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="dfarun"):
        mean, Z = whiten.cached_fit(correlated(), 1e-3, blocker / "cache", "cifar10")
    assert "could not cache" in caplog.text and Z.shape == (24, 24)
