"""`validate(cfg)`: one checker for what the schema declares (schema.py: each key's own range,
choices or pattern, and the rules across keys), then what cannot be declared: whether the conv
net's blocks fit its images, and whether the job can fit in this machine's memory at all.

Each failure is one ConfigError naming the key, the bad value and what is allowed (exit code 2).
"""
from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dfarun.config.schema import Config, cross_checks, expected, resolve_device, unknown_key
from dfarun.errors import ConfigError, DfarunError, check

BOUNDS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key: every key there and known, no ??? left, each
    value as its field declares, the rules across keys, the conv net's shape, the device, the
    memory the job needs and the data folder (the store's folders: store.check_store)."""
    from dfarun.engine.data import check_data_dir

    check_keys(cfg, Config)
    for key, ok, allowed in cross_checks(cfg):
        value = OmegaConf.select(cfg, key)
        check(ok, key, list(value) if OmegaConf.is_list(value) else value, allowed)
    if cfg.model.channels:
        check_conv(cfg)
    check_memory(cfg, resolve_device(cfg.device))
    check_data_dir(cfg.dataset.name, cfg.data_dir)


def check_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Every key is in the schema (`+key=` can add one) and none is deleted (`~key`, which the
    schema does not notice) or left at ???; every value resolves and is what its field allows."""
    fields, types = {f.name: f for f in dataclasses.fields(schema)}, typing.get_type_hints(schema)
    raw = OmegaConf.to_container(cfg, resolve=False)
    present = set(cfg.keys())  # `key in cfg` is false for a ??? value too
    for key in fields:
        if key not in present:
            raise DfarunError(f"~{prefix}{key}: keys cannot be deleted; set a value instead, "
                              f"{prefix}{key}=<{expected(prefix + key)}>")
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in fields:
            raise unknown_key(path, raw[key])
        check(not OmegaConf.is_missing(cfg, key), path, raw[key], f"missing value; expected {expected(path)}")
        if dataclasses.is_dataclass(types[key]):
            check_keys(cfg[key], types[key], f"{path}.")
            continue
        try:
            value = cfg[key]
        except OmegaConfBaseException as err:
            raise ConfigError(path, raw[key], f"cannot be resolved ({str(err).splitlines()[0]})") from None
        value = list(value) if OmegaConf.is_list(value) else value
        check(allows(fields[key].metadata, value), path, value, f"expected {expected(path)}")


def allows(meta, value) -> bool:
    """`value` is what a field's metadata declares (schema.py lists the keys). None passes: the
    type (checked on compose) says whether null is allowed. NaN fails every bound."""
    if value is None:
        return True
    if isinstance(value, list):
        return (len(value) >= meta.get("min_len", 0) and len(value) == meta.get("length", len(value))
                and not (meta.get("distinct") and len(set(value)) < len(value))
                and all(allows(meta, item) for item in value))
    choices = meta.get("choices")
    return ((choices is None or value in (choices() if callable(choices) else choices))
            and all(op(value, meta[k]) for k, op in BOUNDS.items() if k in meta)
            and ("pattern" not in meta or re.fullmatch(meta["pattern"], value) is not None))


def check_conv(cfg: DictConfig) -> None:
    """A conv net: its pooling blocks must leave at least one pixel of the data set's images."""
    from dfarun.engine.conv import ConvArch
    from dfarun.engine.data import image_shape

    m, shape = cfg.model, image_shape(cfg.dataset)
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
