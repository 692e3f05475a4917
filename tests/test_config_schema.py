"""What a value may be is declared on the schema (dfarun/config/schema.py) and one checker
(config/checks.py) enforces every declaration: each bound of each key, just past it refused
and at it allowed; each set of choices, read from its registry when checked; a mistyped key
answered with the nearest one. The words of each declaration are what errors say.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys
import typing

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dfarun.cli import main as cli
from dfarun.config.checks import BOUNDS, allows, validate
from dfarun.config.checks import expected
from dfarun.config.schema import CONF_DIR, Config
from dfarun.errors import ConfigError, DfarunError

from helpers import TINY


def declared(kind: tuple[str, ...]) -> list[tuple[str, dict, type]]:
    """(key, metadata, type) of every field of the schema whose metadata has one of `kind`."""
    def walk(schema, prefix):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from walk(hints[f.name], f"{prefix}{f.name}.")
            elif any(k in f.metadata for k in kind):
                yield f"{prefix}{f.name}", dict(f.metadata), hints[f.name]
    return list(walk(Config, ""))


BOUNDED = declared(tuple(BOUNDS))


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    """The tiny config (helpers.TINY) composed once for the module; `with_value(key, value)`
    is a copy of it with one value set, as `key=value` on the command line sets it (a compose
    per case would cost ~0.1 s each, and what is under test is the checker, not Hydra)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=[*TINY, f"store={tmp_path_factory.mktemp('schema') / 'runs'}"])

    def with_value(key: str, value):
        cfg = copy.deepcopy(base)
        OmegaConf.update(cfg, key, value)
        assert OmegaConf.select(cfg, key) == value
        return cfg
    return with_value


@pytest.mark.parametrize("key, meta, typ", BOUNDED, ids=[k for k, _, _ in BOUNDED])
def test_every_declared_bound_is_enforced(tiny_cfg, key, meta, typ):
    def value(x):  # a list's items carry its bounds
        return [x] * meta.get("length", 1) if "List" in str(typ) else x

    for bound, limit in ((b, meta[b]) for b in BOUNDS if b in meta):
        is_int = isinstance(limit, int) and "float" not in str(typ)
        past = {"ge": limit - 1, "gt": limit, "le": limit + 1 if is_int else 2 * limit, "lt": limit}[bound]
        at = {"ge": limit, "le": limit, "gt": math.nextafter(limit, math.inf),
              "lt": limit - 1 if is_int else math.nextafter(limit, -math.inf)}[bound]
        assert allows(meta, value(at)), (key, bound, at)
        with pytest.raises(ConfigError) as info:
            validate(tiny_cfg(key, value(past)))
        assert str(info.value).startswith(f"{key}=") and "expected" in str(info.value), (bound, str(info.value))


CHOICES = declared(("choices",))


@pytest.mark.parametrize("key, meta, typ", CHOICES, ids=[k for k, _, _ in CHOICES])
def test_every_declared_choice_is_enforced_and_listed(tiny_cfg, key, meta, typ):
    choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    assert all(allows(meta, c) for c in choices)
    with pytest.raises(ConfigError) as info:
        validate(tiny_cfg(key, 4 if 'int' in str(typ) else 'nope'))
    assert str(info.value).startswith(f"{key}=")
    listed = meta.get("words") or f"one of {', '.join(map(str, choices))}"  # words: the list said in words
    assert listed in str(info.value)


def test_a_registry_is_read_when_checked(make_cfg, monkeypatch):
    """A new rule is one RULES line: method.name accepts it with no change to the schema."""
    from dfarun.engine import rules
    cfg = make_cfg("method.name=mine")
    with pytest.raises(ConfigError, match="^method.name='mine': expected one of bp, "):
        validate(cfg)
    monkeypatch.setitem(rules.RULES, "mine", rules.RULES["dfa"])
    validate(cfg)


@pytest.mark.parametrize("key, words", [
    ("max_epochs", "an int >= 1"),
    ("train_epochs", "an int >= 1 or null"),
    ("batch_size", "an int >= 1"),
    ("seed_stack", "an int >= 1 or null"),
    ("seeds", "a list of ints in [0, 2**63), distinct, not empty (e.g. seeds=[0,1,2]; torch's seeds are 64-bit ints)"),
    ("lr", "a float in (0, 3.4e38] or null (float32's range)"),
    ("dataset.lr", "a float in (0, 3.4e38] (float32's range)"),
    ("rmsprop_init", "a float in [0, 3.4e38] (float32's range)"),
    ("reg.p_input", "a float in [0, 1)"),
    ("reg.p_hidden", "a float in [0, 1)"),
    ("reg.p_conv", "a list of floats in [0, 1)"),
    ("reg.eps", "a float in [0, 3.4e38] (float32's range)"),
    ("halve_every", "an int >= 0"),
    ("align_every", "an int >= 1 (steps)"),
    ("freeze_first_epochs", "an int >= 0"),
    ("dataset.classes", "an int >= 2"),
    ("dataset.test_size", "an int >= 1 or null"),
    ("dataset.noise", "a float in [0, 3.4e38] (float32's range)"),
    ("dataset.data_seed", "an int in [0, 2**63) (torch's seeds are 64-bit ints)"),
    ("dataset.shape", "[C,H,W], three ints >= 1 or null"),
    ("model.depth", "an int in [1, 1000]"),
    ("model.width", "an int >= 1"),
    ("model.channels", "a list of ints >= 1"),
    ("model.activation", "one of logistic, relu, tanh"),
    ("method.name", "one of bp, dfa, dfa_first, fa, ifa"),
    ("schedule", "one of constant, auto, step"),
    ("table", "one of 1, 2, 3 or null"),
    ("compile", "auto, true or false"),
])
def test_errors_word_the_declaration(key, words):
    """What each key allows, as every error about it says (compose's type errors too)."""
    assert expected(key) == words


@pytest.mark.parametrize("override, says", [
    ("max_epoch=5", "max_epoch=5: unknown key; did you mean max_epochs? expected one of the top-level keys: "),
    ("+model.widht=5", "model.widht=5: unknown key; did you mean model.width? expected one of the keys of model: "),
    ("foo=1", "foo=1: unknown key; expected one of the top-level keys: "),  # nothing near: no guess
])
def test_a_mistyped_key_suggests_the_nearest(override, says):
    with pytest.raises(DfarunError) as info:
        cli.check_args([override])
    assert str(info.value).startswith(says), str(info.value)


def test_config_imports_no_torch():
    """The console script answers a bad override before torch is imported (seconds)."""
    code = "import sys, dfarun.config.checks, dfarun.config.grids; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
