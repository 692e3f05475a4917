"""The author's constants in one place: each one's value, unit and source.

Sources: "paper" is Nøkland 2016, arXiv:1609.01596, by section; "code" is the author's Lua
Torch code, github.com/anokland/dfa-torch, by file. docs/protocol.md tells the whole story of
each. The engine reads its constants from here (step.py: RMSprop; train.py and state.py: the
stopping rule and the auto schedule; nets.py, conv.py and rules.py: the init and feedback
bounds); nowhere else writes these numbers.

`CONF` holds the author's values of the settings a user may change on the command line (the
per-data-set rates, the epoch cap, the batch size, the regularisers). Those live in conf/,
which is what a job reads: one place to override them, and the values the record's experiment
key hashes. This table holds them as the reference, with their sources, and names the conf/
file and key of each; tests/test_engine_hyp.py checks that conf/ still says the same.

`IMAGE_SHAPES`, `CLASSES` and `SIZES` are the real data sets' published facts, here so that
torch-free readers (run/record.py, config/) and the loaders (data.py) share one copy.
"""
from __future__ import annotations

from typing import NamedTuple


class Hyp(NamedTuple):
    value: float | int
    unit: str
    source: str
    conf: str = ""  # CONF only: "<file under conf/>: <key>", the setting a job reads


HYP: dict[str, dict[str, Hyp]] = {
    "rmsprop": {  # paper Section 4 (RMSprop, ref. [14]); torch.optim.RMSprop(alpha, eps), no momentum
        "decay": Hyp(0.99, "weight of the old mean square, per step (the new g² gets 1 - 0.99)",
                     "code Main.lua: Torch optim.rmsprop's default alpha"),
        "eps": Hyp(1e-8, "added to sqrt(mean square), in update units",
                   "code Main.lua: Torch optim.rmsprop's default epsilon, added after the square root"),
    },
    "stop": {  # paper Section 4: stop "when training error reached 0.01% or ... 300" epochs
        "keep": Hyp(0.75, "weight of the old average, per epoch (the epoch's error gets 1 - 0.75 = 0.25)",
                    "code Main.lua: m <- 0.75 m + 0.25 err"),
        "start": Hyp(1.0, "fraction of training examples (100 %): m before the first epoch", "code Main.lua"),
        "at": Hyp(1e-4, "fraction of training examples (0.01 %): converged when m <= this",
                  "paper Section 4; code Main.lua compares the average"),
        "max_halvings": Hyp(8, "halvings of the rate: schedule=auto ends a seed at this one",
                            "code Main.lua, -epoch_step 0"),
    },
    "init": {  # uniform in [-bound, bound]
        "forward": Hyp(-0.5, "exponent: weights and biases bound = fan_in ** -0.5 (fan_in = inputs of a unit)",
                       "paper Section 4; code Models/mlp.lua, Models/conv.lua (Torch's default init)"),
        "feedback": Hyp(-0.5, "exponent: B_i bound = n_i ** -0.5 (n_i = units receiving the feedback)",
                        "paper Section 4 ('fanout'); code Models/ErrorFeedback.lua"),
    },
}

CONF: dict[str, Hyp] = {
    "max_epochs": Hyp(300, "epochs", "paper Section 4", "profile/default.yaml: max_epochs"),
    "batch_size": Hyp(64, "examples per mini-batch", "paper Section 4", "config.yaml: batch_size"),
    "lr_mnist": Hyp(1e-4, "RMSprop step", "code Main.lua: the default -LR", "dataset/mnist.yaml: lr"),
    "lr_cifar10": Hyp(5e-5, "RMSprop step", "code README.md: the conv-net commands", "dataset/cifar10.yaml: lr"),
    "lr_cifar100": Hyp(2.5e-5, "RMSprop step", "code README.md: the conv-net commands", "dataset/cifar100.yaml: lr"),
    "p_input": Hyp(0.1, "probability of dropping an input", "paper Section 4", "reg/dropout.yaml: p_input"),
    "p_hidden": Hyp(0.5, "probability of dropping a hidden unit", "paper Section 4", "reg/dropout.yaml: p_hidden"),
    "fgsm_eps": Hyp(0.08, "input units (pixels in [0, 1])", "code README.md: the MNIST adversarial command",
                    "reg/adversarial.yaml: eps"),
}

# The real data sets, as published (MNIST: LeCun et al. 1998, yann.lecun.com/exdb/mnist;
# CIFAR-10 and CIFAR-100: Krizhevsky 2009, www.cs.toronto.edu/~kriz/cifar.html).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}  # (C, H, W) pixels
CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}  # labels 0 to classes - 1
SIZES = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}  # examples: train, test
