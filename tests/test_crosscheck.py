"""dfarun's BP against autograd + torch.optim.RMSprop, trained side by side (crosscheck.py)."""
from __future__ import annotations

from dfarun.cli.crosscheck import autograd_bp, dfarun_bp


def test_bp_trains_like_autograd_with_torch_rmsprop(toy_data):
    run = ([12, 16, 16, 3], "tanh", 4, toy_data, 1e-2, 32, 5)
    ours, theirs = dfarun_bp(*run), autograd_bp(*run)
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == [1, 2, 3, 4, 5]
    for a, b in zip(ours, theirs):  # counts of 200 / 100 examples: equal, not merely close
        assert a["train_error"] == b["train_error"] and a["test_error"] == b["test_error"]
    assert ours[-1]["train_error"] < ours[0]["train_error"]  # it learned: not two idle nets agreeing
