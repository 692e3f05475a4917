"""`validate(cfg)` and the value checks behind it: ranges, names, the conv net's shape, and whether
the job can fit in this machine's memory at all.

The schema (config.py) fixes each key's type; these fix what each value may be, so that a
run that starts can finish: every number in range and finite, every name usable in a file
name, every size something the machine can hold. Each failure is one ConfigError naming the
key, the bad value and what is allowed.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dfarun.config import schema as config
from dfarun.config.schema import CONF_DIR, Config, LOGGERS, check_structure, SCHEDULES, conv_dropout, effective_lr
from dfarun.errors import ConfigError
from dfarun.engine.nets import dropout_on
from dfarun.config.schema import _check as check

MAX_DEPTH = 1000  # hidden layers; the paper's deepest net has 100 (each layer costs Python time)
# model.name goes into every record's file name: no separators, no leading dot, not too long
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
NAME_RULE = "expected 1 to 64 letters, digits or _.+- starting with a letter or digit (it names the record files)"


@lru_cache(maxsize=None)
def figures() -> tuple[str, ...]:
    """The `figure:` names the experiments in conf/experiment/ set."""
    names = {OmegaConf.load(p).get("figure") for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))}
    return tuple(sorted(n for n in names if n))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key. Hydra checked the types on compose; this
    checks the rest: every key there and known, no ??? left, ranges and names (checks.py),
    the device, the memory the job needs and the data folder (the store's folders: store.check_paths)."""
    from dfarun.engine.data import check_data_dir

    check_structure(cfg, Config)
    check_values(cfg)
    if cfg.model.channels:
        check_conv(cfg)
    check_memory(cfg, config.resolve_device(cfg.device))
    check_data_dir(cfg.dataset.name, cfg.data_dir)


def check_values(cfg: DictConfig) -> None:
    """Every value of a composed config (types already checked) within its range."""
    from dfarun.engine.data import CLASSES, LOADERS, SIZES
    from dfarun.engine.nets import ACTIVATIONS
    from dfarun.engine.rules import RULES

    d, m, reg = cfg.dataset, cfg.model, cfg.reg
    check(cfg.method.name in RULES, "method.name", cfg.method.name, f"expected one of {', '.join(sorted(RULES))}")
    check(m.activation in ACTIVATIONS, "model.activation", m.activation,
          f"expected one of {', '.join(sorted(ACTIVATIONS))}")
    check(d.name in LOADERS, "dataset.name", d.name, f"expected one of {', '.join(sorted(LOADERS))}")
    check(cfg.logger.name in LOGGERS, "logger", cfg.logger.name, f"expected one of {', '.join(LOGGERS)}")
    if cfg.logger.name == "tensorboard":
        check(importlib.util.find_spec("tensorboard") is not None, "logger", "tensorboard",
              "the tensorboard package is not installed (make install, or pip install 'dfarun[tensorboard]')")
    check(FILE_NAME.fullmatch(m.name) is not None, "model.name", m.name, NAME_RULE)
    for key, value in (("model.label", m.label), ("reg.label", reg.label), ("reg.name", reg.name),
                       ("profile", cfg.profile)):  # printed in logs and tables: one line each
        check(value.isprintable() and len(value) <= 100, key, value, "expected printable text, at most 100 characters")
    check(cfg.table in (None, 1, 2, 3), "table", cfg.table, "expected null, 1, 2 or 3 (the paper's tables)")
    check(cfg.figure is None or cfg.figure in figures(), "figure", cfg.figure, f"expected null or one of {list(figures())}")
    for key in ("store", "data_dir"):
        check(cfg[key].strip() != "", key, cfg[key], f"expected a folder ({key}=. for the current one)")
    _check_dataset(d, CLASSES, SIZES)
    check(1 <= m.depth <= MAX_DEPTH, "model.depth", m.depth, f"expected an int in [1, {MAX_DEPTH}]")
    check(m.width >= 1, "model.width", m.width, "expected an int >= 1")
    seeds = list(cfg.seeds)
    check(len(seeds) > 0, "seeds", seeds, "expected a non-empty list of ints, e.g. seeds=[0,1,2]")
    check(len(set(seeds)) == len(seeds), "seeds", seeds, "expected distinct seeds")
    check(all(s >= 0 for s in seeds), "seeds", seeds, "expected ints >= 0")
    check(cfg.max_epochs >= 1, "max_epochs", cfg.max_epochs, "expected an int >= 1")
    check(cfg.train_epochs is None or cfg.train_epochs >= 1, "train_epochs", cfg.train_epochs,
          "expected an int >= 1, or null for max_epochs alone")
    check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "expected an int >= 1")
    check(cfg.seed_stack is None or cfg.seed_stack >= 1, "seed_stack", cfg.seed_stack,
          "expected an int >= 1, or null for the device's choice")
    check(_positive(d.lr), "dataset.lr", d.lr, "expected a float in (0, 3.4e38] (float32's range)")
    check(_positive(effective_lr(cfg)), "lr", effective_lr(cfg),
          "expected a float in (0, 3.4e38] (float32's range), or null for the data set's rate")
    check(math.isfinite(cfg.rmsprop_init) and cfg.rmsprop_init >= 0, "rmsprop_init", cfg.rmsprop_init,
          "expected a finite float >= 0 (RMSprop's initial mean square)")
    check(cfg.schedule in SCHEDULES, "schedule", cfg.schedule, f"expected one of {list(SCHEDULES)}")
    if cfg.schedule == "step":
        check(cfg.halve_every >= 1, "halve_every", cfg.halve_every,
              "expected an int >= 1 (epochs between halvings) with schedule=step")
    else:
        check(cfg.halve_every == 0, "halve_every", cfg.halve_every,
              f"expected 0: read only with schedule=step (schedule is {cfg.schedule})")
    for key in ("p_input", "p_hidden"):
        check(0 <= reg[key] < 1, f"reg.{key}", reg[key], "expected a probability in [0, 1)")
    check(_scale(reg.eps), "reg.eps", reg.eps, "expected a float in [0, 3.4e38] (float32's range)")
    _check_reg_name(reg, dropout_on(reg.p_input, reg.p_hidden, conv_dropout(cfg)))
    check(cfg.freeze_first_epochs >= 0, "freeze_first_epochs", cfg.freeze_first_epochs, "expected an int >= 0")
    check(cfg.align_every >= 1, "align_every", cfg.align_every, "expected an int >= 1 (steps)")
    if cfg.val:
        n, held = d.train_size or SIZES.get(d.name, (0,))[0], config.VAL_SIZE  # read now: tests shrink it
        check(n > held, "val", True, f"needs more than {held} training examples (dataset.train_size={n})")


# reg.name goes into records and tables as what the run did: it must say what reg's values do,
# so that reg.name=dropout alone (no probabilities) is refused rather than trained without dropout
REGULARISERS = {  # name -> (dropout on, fast-gradient-sign on)
    "none": (False, False),
    "dropout": (True, False),
    "adversarial": (False, True),
}


def _check_reg_name(reg: DictConfig, dropout: bool) -> None:
    doing = (dropout, reg.eps > 0)
    names = [name for name, does in REGULARISERS.items() if does == doing]
    check(reg.name in REGULARISERS, "reg.name", reg.name,
          f"expected one of {list(REGULARISERS)} (reg=<name> sets its values)")
    check(reg.name in names, "reg.name", reg.name,
          f"does not match reg's values (dropout {'on' if dropout else 'off'}, eps={reg.eps}): "
          + (f"expected {names[0]} for these values, or reg={reg.name} alone for its own" if names else
             "dropout and adversarial training together have no name here (the paper never combines them)"))


FLOAT32_MAX = 3.4028234663852886e38  # rates and scales meet float32 tensors: larger is inf there


def _positive(x: float) -> bool:
    return 0 < x <= FLOAT32_MAX


def _scale(x: float) -> bool:
    return 0 <= x <= FLOAT32_MAX


def _check_dataset(d: DictConfig, classes: dict, sizes: dict) -> None:
    size = d.train_size
    check(size is None or size >= 1, "dataset.train_size", size, "expected null or an int >= 1")
    check(d.data_seed >= 0, "dataset.data_seed", d.data_seed, "expected an int >= 0")
    check(_positive(d.zca_eps), "dataset.zca_eps", d.zca_eps, "expected a float > 0")
    if d.name == "synthetic":  # generated: every size must be given
        check(d.classes >= 2, "dataset.classes", d.classes, "expected an int >= 2")
        for key in ("train_size", "test_size", "features"):
            check(d[key] is not None and d[key] >= 1, f"dataset.{key}", d[key], "expected an int >= 1")
        check(_scale(d.noise), "dataset.noise", d.noise, "expected a float in [0, 3.4e38] (float32's range)")
        if d.shape is not None:
            shape = list(d.shape)
            check(len(shape) == 3 and all(n >= 1 for n in shape), "dataset.shape", shape,
                  "expected null or [C,H,W], three ints >= 1")
            check(math.prod(shape) == d.features, "dataset.shape", shape,
                  f"expected C*H*W = dataset.features ({d.features})")
        return
    # a real data set: its sizes are the files'; the synthetic-only keys would be silently ignored
    real_classes, (n_train, _) = classes.get(d.name), sizes.get(d.name, (None, None))
    check(real_classes is None or d.classes == real_classes, "dataset.classes", d.classes,
          f"expected {real_classes}: {d.name} has {real_classes} classes")
    check(size is None or n_train is None or size <= n_train, "dataset.train_size", size,
          f"expected null or an int in [1, {n_train}]: {d.name} has {n_train} training examples")
    for key in ("test_size", "features", "shape"):
        check(d[key] is None, f"dataset.{key}", d[key], f"synthetic data only; expected null for {d.name}")
    check(d.noise == 0 and d.data_seed == 0, "dataset.noise" if d.noise else "dataset.data_seed",
          d.noise or d.data_seed, f"synthetic data only; expected the default (0) for {d.name}")


def check_conv(cfg: DictConfig) -> None:
    """A conv net: its blocks must fit the data set's images, and the rule must know conv nets."""
    from dfarun.engine.conv import ConvArch
    from dfarun.engine.data import image_shape
    from dfarun.engine.rules import RULES

    m = cfg.model
    conv_rules = sorted(k for k, r in RULES.items() if r.conv)
    check(RULES[cfg.method.name].conv, "method.name", cfg.method.name,
          f"not defined for conv nets (model.channels set); expected one of {conv_rules}")
    check(all(c >= 1 for c in m.channels), "model.channels", list(m.channels), "expected ints >= 1")
    check(m.kernel >= 1 and m.kernel % 2 == 1, "model.kernel", m.kernel, "expected an odd int >= 1")
    check(m.pool >= 1, "model.pool", m.pool, "expected an int >= 1")
    check(m.pool_stride >= 1, "model.pool_stride", m.pool_stride, "expected an int >= 1")
    p_conv = list(cfg.reg.p_conv)
    check(not p_conv or len(p_conv) == len(m.channels), "reg.p_conv", p_conv,
          f"expected [] or one probability per conv block ({len(m.channels)})")
    check(all(0 <= p < 1 for p in p_conv), "reg.p_conv", p_conv, "expected probabilities in [0, 1)")
    shape = image_shape(cfg.dataset)
    check(shape is not None, "dataset.shape", None,
          "a conv net needs images: set dataset.shape=[C,H,W] with C*H*W = dataset.features")
    last = ConvArch(shape, tuple(m.channels), (), cfg.dataset.classes, m.kernel, m.pool, m.pool_stride).blocks()[-1]
    check(min(last[1:]) >= 1, "model.channels", list(m.channels),
          f"too many pooling blocks for {list(shape)} images (each maps n -> (n - {m.pool}) // {m.pool_stride} + 1)")


# --- memory: refuse at start what cannot be allocated, rather than fail in the allocator -------

# a size the user set, and a modest value of it: the key whose modest value saves the most is named
SIZE_KEYS = {"dataset.train_size": ("n_train", 1000), "dataset.test_size": ("n_test", 1000),
             "dataset.features": ("features", 784), "dataset.classes": ("classes", 10),
             "model.width": ("width", 800), "model.depth": ("depth", 2), "seeds": ("seeds", 1),
             "batch_size": ("batch", 64), "model.channels": ("channels", 256), "model.kernel": ("kernel", 5)}


def sizes(cfg: DictConfig) -> dict:
    """The numbers the job's memory depends on."""
    from dfarun.engine.data import IMAGE_SHAPES, SIZES, image_shape

    d, m = cfg.dataset, cfg.model
    real = SIZES.get(d.name)
    n_train = min(d.train_size or real[0], real[0]) if real else d.train_size
    features = math.prod(IMAGE_SHAPES[d.name]) if real else d.features
    return {"n_train": n_train, "n_test": real[1] if real else d.test_size, "features": features,
            "classes": d.classes, "width": m.width, "depth": m.depth, "seeds": len(cfg.seeds),
            "batch": cfg.batch_size, "channels": max(m.channels, default=0), "n_blocks": len(m.channels),
            "kernel": m.kernel, "shape": image_shape(d) if m.channels else None, "pool": (m.pool, m.pool_stride),
            "rule": cfg.method.name}


def need(p: dict) -> int:
    """A lower bound on the bytes the job allocates at once: data, one-hot targets, weights,
    RMSprop state, feedback matrices and one mini-batch's activations (float32), data order (int64)."""
    s, b, c = p["seeds"], min(p["batch"], p["n_train"]), p["classes"]
    data = 4 * p["features"] * (p["n_train"] + p["n_test"])
    order = 16 * s * p["n_train"]              # each seed's permutation, and their stack
    targets = 4 * c * c + 4 * s * b * c          # the one-hot table, and one batch's targets
    if p["shape"]:
        params, hidden, acts, first = _conv(p)
    else:
        w, depth = p["width"], p["depth"]
        params = (p["features"] + 1) * w + (depth - 1) * (w + 1) * w + (w + 1) * c
        hidden, acts, first = depth * w, depth * w + c, w
    from dfarun.engine.rules import RULES, copy_of_forward, first_layer_only, no_feedback  # torch: not at import

    # by what the rule's feedback is, not its name: a new rule that reuses one is counted right
    kind = RULES[p["rule"]].feedback
    feedback = {no_feedback: 0, copy_of_forward: params, first_layer_only: c * first}.get(kind, c * hidden)
    return data + order + targets + 4 * s * (2 * params + feedback + 2 * b * acts)


def _conv(p: dict) -> tuple[int, int, int, int]:
    """(weights, hidden units, activations, the first block's output units) per example and seed
    of a conv net, every block as wide as the widest (a bound from below would need each width;
    the widest is what is large)."""
    (cin, h, w), k, (pool, stride) = p["shape"], p["kernel"], p["pool"]
    params = hidden = acts = first = 0
    for _ in range(p["n_blocks"]):
        cout = p["channels"]
        params += cin * cout * k * k + cout
        acts += cout * h * w                   # before pooling
        h, w = ((n - pool) // stride + 1 for n in (h, w))
        hidden += cout * h * w
        first = first or hidden                # after the first block: its output
        cin = cout
    flat, width, depth = cin * h * w, p["width"], p["depth"]
    params += (flat + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * p["classes"]
    return params, hidden + depth * width, acts + hidden + depth * width + p["classes"], first


def check_memory(cfg: DictConfig, device) -> None:
    """Refuse a job whose data, weights and one mini-batch alone exceed the device's memory."""
    p = sizes(cfg)
    total = need(p)
    have, where = device_memory(device)
    if total <= have:
        return
    synthetic = cfg.dataset.name == "synthetic"
    keys = [k for k in SIZE_KEYS if synthetic or k not in ("dataset.test_size", "dataset.features")]
    key = min(keys, key=lambda k: need({**p, SIZE_KEYS[k][0]: min(p[SIZE_KEYS[k][0]], SIZE_KEYS[k][1])}))
    value = OmegaConf.select(cfg, key)
    value = list(value) if OmegaConf.is_list(value) else value
    raise ConfigError(key, value, f"the job needs at least {_bytes(total)} of memory, more than {where} "
                                  f"has ({_bytes(have)}); expected a smaller {key}")


def device_memory(device) -> tuple[int, str]:
    """(bytes, words) of the memory a job on `device` can use."""
    import torch
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {device}"
    return machine_memory(), "this machine"


def machine_memory() -> int:
    """Physical memory, or the cgroup's limit when a container sets a lower one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.3g} PB"
