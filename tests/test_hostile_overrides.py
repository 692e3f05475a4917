"""Random hostile command lines (Hypothesis): whatever the overrides — wrong types, values out
of range, unknown keys, odd characters, empty and huge values, deletions, sweeps — `dfarun`
exits 0 or 2, never prints a traceback, and leaves nothing behind unless it succeeded.

Each example runs the console script in-process (helpers.run_dfarun) in a fresh folder,
on a tiny synthetic base config that the drawn overrides replace key by key. Training is
capped at 2 epochs (a huge but valid max_epochs is not what is tested here) and downloads
fail as offline, so an example costs a compose or a one-second run.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision import datasets

import dfarun.run.runner
from dfarun.config.schema import CONF_DIR

from helpers import FAST, ONE_LINE, run_dfarun


EXAMPLES = 24

# every key of the schema, and some it does not have
KEYS = ["seeds", "max_epochs", "lr", "batch_size", "device", "force", "compile", "val", "whiten", "schedule",
        "track_alignment", "align_every", "freeze_first_epochs", "save_weights", "table", "figure", "profile",
        "dataset.name", "dataset.classes", "dataset.lr", "dataset.train_size", "dataset.test_size",
        "dataset.features", "dataset.noise", "dataset.data_seed", "dataset.shape", "dataset.zca_eps",
        "model.name", "model.label", "model.depth", "model.width", "model.activation", "model.channels",
        "model.kernel", "model.pool", "model.pool_stride", "method.name", "reg.name", "reg.label",
        "reg.p_input", "reg.p_hidden", "reg.p_conv", "reg.eps", "logger.name",
        "foo", "model.foo", "dataset.lr.x", "seeds[0]", "Max_Epochs", "é"]
# the config groups, with their options (conv nets and CIFAR-sized images left out: valid, but
# seconds per example) and options that do not exist
GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml") if "conv" not in p.stem and "cifar" not in p.stem)
          + ["nope", "../model/2x800_tanh", ""] for g in ("dataset", "model", "method", "reg", "row", "experiment",
                                                           "profile", "logger")}
ODD = " ,=[]{}$'\"\\:.~*?#@!%^&()|<>`\t\nxé日本🙂\u200b\x7f-_+/"

numbers = st.sampled_from(["0", "1", "2", "-1", "64", "2147483648", "9223372036854775807", "9223372036854775808",
                           "-9223372036854775809", "1" + "0" * 30, "0.5", "1e-3", "-0.5", "nan", "inf", "-inf",
                           "1e308", "1e-320", "1e39", "0x10", "1_000"])
constants = st.sampled_from(["true", "false", "True", "null", "???", "", "''", '""', "'   '", "x" * 2000])
lists = st.sampled_from(["[]", "[0]", "[0,1]", "[1,1]", "[-1]", "[a]", "[0.5]", "[[0]]", "[9223372036854775808]",
                         "[3,4,4]", "[1,28,28]", "{}", "{a:1}"])
interpolations = st.sampled_from(["${max_epochs}", "${batch_size}", "${oc.env:NO_SUCH_VARIABLE}", "${nope}",
                                  "${now:%Y}", "${oc.decode:'[1,2]'}", "${", "$}"])
odd_text = st.text(alphabet=ODD, max_size=12)
values = st.one_of(numbers, constants, lists, interpolations, odd_text)
# store and data_dir: odd names, but always a folder inside the example's own folder
folder_names = st.text(alphabet=ODD.replace("/", "").replace("~", "").replace("$", "").replace("\\", ""),
                       min_size=1, max_size=12).filter(lambda s: s.strip(". ") != "")


# overrides a run succeeds with, in a second or so: half the drawn overrides are one of these
VALID = ["max_epochs=2", "seeds=[0,1]", "seeds=[3]", "lr=0.01", "lr=null", "batch_size=1", "batch_size=100000",
         "device=cpu", "force=true", "whiten=true", "schedule=auto", "track_alignment=true", "align_every=1",
         "freeze_first_epochs=1", "save_weights=true", "method=bp", "method=fa", "method=ifa", "method=dfa_first",
         "reg=dropout", "reg=adversarial", "model=1x800_tanh", "model=2x800_relu", "model=7x240_tanh",
         "model=2x800_logistic", "dataset.noise=0", "dataset.classes=3", "dataset.data_seed=7", "model.width=5",
         "model.activation=relu", "model.label='odd label, é 日本'", "dataset.shape=[2,2,2]", "profile=quick",
         "model.name=my.net-1", "reg.eps=0", "max_epochs=9223372036854775807", "dataset.train_size=1"]


@st.composite
def override(draw) -> str:
    kind = draw(st.sampled_from(["valid"] * 5 + ["key", "key", "key", "group", "folder"]))
    if kind == "valid":
        return draw(st.sampled_from(VALID))
    if kind == "group":
        key = draw(st.sampled_from(sorted(GROUPS)))
        value = draw(st.one_of(st.sampled_from(GROUPS[key]), odd_text))
    elif kind == "folder":
        key, value = draw(st.sampled_from(["store", "data_dir"])), "./" + draw(folder_names)
    else:
        key, value = draw(st.sampled_from(KEYS)), draw(values)
    form = draw(st.sampled_from(["{k}={v}"] * 6 + ["+{k}={v}", "++{k}={v}", "~{k}", "{k}", "{k}={v},{v}", "{k}=={v}"]))
    return form.format(k=key, v=value)


def _key(text: str) -> str:
    return text.lstrip("+~").split("=")[0]


@pytest.fixture(scope="module", autouse=True)
def quick_and_offline():
    """Cap training at 2 epochs; downloads fail as if offline."""
    real_fit = dfarun.run.runner.fit

    def capped(state, data, rule, protocol, **hooks):
        return real_fit(state, data, rule, dataclasses.replace(protocol, max_epochs=min(protocol.max_epochs, 2)),
                        **hooks)

    def offline(self):
        raise RuntimeError("offline (test)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dfarun.run.runner, "fit", capped)
        for cls in (datasets.MNIST, datasets.CIFAR10, datasets.CIFAR100):
            mp.setattr(cls, "download", offline)
        yield


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(multirun=st.booleans(), drawn=st.lists(override(), min_size=1, max_size=3))
def test_random_overrides_end_in_0_or_2_without_a_traceback(tmp_path, multirun, drawn):
    here = Path(tempfile.mkdtemp(dir=tmp_path))
    keys = {_key(o) for o in drawn}
    argv = [*(["-m"] if multirun else []), *(o for o in FAST + ["store=runs"] if _key(o) not in keys), *drawn]

    result = run_dfarun(here, *argv)

    assert result.code in (0, 2), (argv, result)
    assert "Traceback" not in result.out + result.err, (argv, result)
    if result.code == 2:
        line = result.line()
        assert line.startswith(ONE_LINE + "error: "), (argv, line)
        assert list(here.iterdir()) == [], (argv, line)   # refused: nothing written, anywhere
    else:
        assert list(here.rglob("*.json")), (argv, result)  # a run that succeeds leaves its records
