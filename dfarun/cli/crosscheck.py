"""BP against PyTorch's own machinery: the same seed trained by dfarun and by autograd +
torch.optim.RMSprop, epoch by epoch.

    python -m dfarun.cli.crosscheck --model 7x240_tanh --epochs 3 --data-dir ~/data

Same init (dfarun's init_state for BP), same data order (the seed's own generator), same
batches, summed binary cross-entropy of logistic outputs (the author's loss), RMSprop with
decay 0.99 and eps 1e-8: only the arithmetic differs (our hand-written backward pass and
update against autograd's and torch.optim's), so the two runs agree up to float rounding,
which grows slowly over epochs. A BP cell far from the paper that agrees here differs
from the paper in protocol or luck, not in its gradient.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dfarun.engine.data import Data
from dfarun.engine.hyp import CONF
from dfarun.engine.nets import ACTIVATIONS, MLPArch
from dfarun.engine.rules import RULES
from dfarun.engine.state import DATA_ORDER_OFFSET, init_state
from dfarun.engine.step import RMSPROP_DECAY, RMSPROP_EPS
from dfarun.engine.train import Protocol, fit

CPU = torch.device("cpu")


def autograd_bp(sizes: list[int], activation: str, seed: int, data: Data, lr: float, batch_size: int,
                epochs: int) -> list[dict]:
    """One seed of BP written the plain PyTorch way; its history rows (train/test error, %)."""
    start = init_state([seed], sizes, activation, RULES["bp"], CPU).net
    weights = [w[0].clone().requires_grad_() for w in start.weights]
    biases = [b[0].clone().requires_grad_() for b in start.biases]
    f = ACTIVATIONS[activation].f
    opt = torch.optim.RMSprop(weights + biases, lr=lr, alpha=RMSPROP_DECAY, eps=RMSPROP_EPS)
    order = torch.Generator().manual_seed(seed + DATA_ORDER_OFFSET)
    classes = sizes[-1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        for W, b in zip(weights[:-1], biases[:-1]):
            x = f(F.linear(x, W, b))
        return F.linear(x, weights[-1], biases[-1])

    history, n = [], len(data.y_train)
    for epoch in range(1, epochs + 1):
        perm, wrong = torch.randperm(n, generator=order), 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            a_y = forward(x)
            loss = F.binary_cross_entropy_with_logits(a_y, F.one_hot(y, classes).to(a_y.dtype), reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
            wrong += int((a_y.argmax(1) != y).sum())
        with torch.no_grad():
            test_wrong = int((forward(data.x_test).argmax(1) != data.y_test).sum())
        history.append({"epoch": epoch, "train_error": 100 * wrong / n,
                        "test_error": 100 * test_wrong / len(data.y_test)})
    return history


def dfarun_bp(sizes: list[int], activation: str, seed: int, data: Data, lr: float, batch_size: int,
              epochs: int) -> list[dict]:
    """The same seed through dfarun's trainer (eager step, no stopping before `epochs`)."""
    state = init_state([seed], sizes, activation, RULES["bp"], CPU)
    [result] = fit(state, data, RULES["bp"], Protocol(lr, batch_size, epochs), on_rows=lambda *a: None)
    return [{k: row[k] for k in ("epoch", "train_error", "test_error")} for row in result.history]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfarun.cli.crosscheck", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="2x800_tanh", help="an MLP of conf/model/ (default: 2x800_tanh)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=CONF["lr_mnist"].value, help="RMSprop step (default: MNIST's 1e-4)")
    p.add_argument("--batch-size", type=int, default=CONF["batch_size"].value)
    p.add_argument("--data-dir", default="~/.cache/dfarun/data", help="MNIST in torchvision's layout")
    args = p.parse_args(argv)
    from dfarun.config.schema import CONF_DIR
    from dfarun.engine.data import load

    path = CONF_DIR / "model" / f"{args.model}.yaml"
    if not path.is_file():
        print(f"crosscheck: error: --model={args.model!r}: no such model in {CONF_DIR / 'model'}", file=sys.stderr)
        return 2
    model = OmegaConf.load(path)
    if model.get("channels"):
        print(f"crosscheck: error: --model={args.model!r}: MLPs only", file=sys.stderr)
        return 2
    dataset = OmegaConf.merge(OmegaConf.load(CONF_DIR / "dataset" / "mnist.yaml"), {"train_size": None})
    data = load(dataset, args.data_dir, CPU)
    sizes = list(MLPArch((data.features, *[model.width] * model.depth, 10)).sizes)
    run = (sizes, model.activation, args.seed, data, args.lr, args.batch_size, args.epochs)
    ours, theirs = dfarun_bp(*run), autograd_bp(*run)
    print(f"{args.model} BP, seed {args.seed}, lr {args.lr:g}, batch {args.batch_size}: dfarun vs autograd + torch.optim.RMSprop")
    print("epoch  train dfarun  train autograd  test dfarun  test autograd")
    for a, b in zip(ours, theirs):
        print(f"{a['epoch']:>5}  {a['train_error']:11.3f}%  {b['train_error']:13.3f}%  "
              f"{a['test_error']:10.3f}%  {b['test_error']:12.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
