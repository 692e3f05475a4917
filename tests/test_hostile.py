"""Hostile input, handled (issue 13): each example a tester found ends in one line and the right
exit code, writes nothing when refused, and loses nothing already trained.

The console script runs in-process (`cli.main` with sys.argv set, `helpers.run_dfarun`): the
same code path as the installed script, at a fraction of a subprocess's start-up; one test
sends a real SIGINT to a real process.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from dfarun.cli import main as cli
from dfarun.cli import guard, preflight
from dfarun.run import runner
from dfarun.run import store
from dfarun.config.schema import CONF_DIR
from dfarun.errors import ConfigError, DfarunError

from helpers import DFARUN, FAST, ONE_LINE, Result, cli_env, run_dfarun


def refused(tmp_path: Path, *argv: str, flags: tuple[str, ...] = ()) -> str:
    """The one line of a refused command (exit code 2), which wrote nothing at all. The model is
    left to a row= or experiment= in argv."""
    base = [a for a in FAST if not a.startswith("model=")] if any(
        a.startswith(("row=", "experiment=")) for a in argv) else FAST
    result = run_dfarun(tmp_path, *flags, *base, *argv)
    assert result.code == 2, result
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
    return result.line()


# --- the command line: grids, rows, deleted keys, sizes -------------------------------------------

@pytest.mark.parametrize("flags, argv, words", [
    ((), ["experiment=table1"], ["experiment='table1'", "grid", "-m"]),
    (("-m",), ["experiment=table1,fig3"], ["one experiment per command"]),
    ((), ["row=2x800_tanh_do", "model=3x50_tanh"], ["model='3x50_tanh'", "row=2x800_tanh_do", "2x800_tanh"]),
    ((), ["row=2x800_tanh_do", "schedule=auto"], ["schedule='auto'", "contradicts row=2x800_tanh_do"]),
    ((), ["row=2x800_tanh", "model.width=100"], ["model.width=100", "row=2x800_tanh"]),
    (("-m",), ["experiment=fig3", "method=fa"], ["method='fa'", "fig3's grid", "bp,dfa"]),
    (("-m",), ["experiment=table1", "row=conv_tanh"], ["row='conv_tanh'", "table1's grid"]),
    ((), ["experiment=ifa_4x100"], ["dataset='synthetic'", "contradicts experiment=ifa_4x100", "mnist"]),
    ((), ["~max_epochs"], ["~max_epochs", "cannot be deleted"]),
    ((), ["~dataset.lr"], ["~dataset.lr", "deletion"]),  # refused by Hydra itself
    ((), ["model.depth=100000"], ["model.depth=100000", "[1, 1000]"]),
    ((), ["seeds=[99999999999999999999]"], ["seeds=", "64-bit"]),
    ((), ["lr=1e308"], ["lr=1e+308", "float32"]),
    ((), ["store="], ["store=''", "expected a folder"]),
    ((), ["data_dir= "], ["data_dir=", "expected a folder"]),
    ((), ["model.name=../x"], ["model.name='../x'", "record files"]),
    ((), ["model.label=a\nb"], ["\\n"]),
    ((), ["--nope"], ["unrecognized arguments", "flags first"]),
    ((), ["dataset=mnist", "dataset.classes=5"], ["dataset.classes=5", "expected 10"]),
    ((), ["dataset=mnist", "dataset.classes=10"], ["dataset.test_size=32", "synthetic data only"]),
    (("-p", "dataset"), [], ["-p/--package=dataset", "with --cfg job"]),
    ((), ["hydra.run.dir=${nope}"], ["Interpolation key 'nope' not found", "hydra.run.dir"]),
])
def test_refused_in_one_line(tmp_path, flags, argv, words):
    line = refused(tmp_path, *argv, flags=flags)
    for w in words:
        assert w in line, line


def test_narrowing_a_grid_and_agreeing_with_a_row_are_fine(tmp_path):
    jobs = cli.check_args(["-m", "experiment=table1", "row=1x800_tanh,2x800_tanh", "method=dfa",
                           f"data_dir={tmp_path}", "device=cpu"])
    assert sorted(c.model.name for c in jobs) == ["1x800_tanh", "2x800_tanh"]
    assert {c.method.name for c in jobs} == {"dfa"}
    # the row's own model, and a budget change of an experiment (profile), are no contradictions
    [cfg] = cli.check_args(["row=2x800_tanh", "model=2x800_tanh", f"data_dir={tmp_path}", "device=cpu"])
    assert cfg.model.name == "2x800_tanh"
    assert len(cli.check_args(["-m", "experiment=fig3", "profile=quick", f"data_dir={tmp_path}"])) == 2


# --- the store's paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, entry", [((), "locks"), ((), "checkpoints"), (("-m",), "sweeps")])
def test_a_store_entry_that_is_a_file_is_one_line(tmp_path, flags, entry):
    # not guessed at up front: the file system refuses, and the guard names the path (exit 1)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / entry).write_text("mine")
    result = run_dfarun(tmp_path, *flags, *FAST, f"store={runs}", "max_epochs=2")
    assert result.code == 1 and str(runs / entry) in result.line() and "writable" in result.line(), result
    assert (runs / entry).read_text() == "mine"


def test_a_store_that_is_a_broken_symlink_is_refused_in_words(tmp_path):
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    result = run_dfarun(tmp_path, *FAST, f"store={tmp_path / 'runs'}")
    assert result.code == 2 and f"is a broken symbolic link (to {tmp_path / 'gone'})" in result.line()
    assert not (tmp_path / "gone").exists()


def test_a_launcher_setting_that_joblib_refuses_is_one_line(tmp_path):
    result = run_dfarun(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0", *FAST,
                        f"store={tmp_path / 'runs'}")
    assert result.code == 2 and "a Hydra launcher setting was refused: n_jobs == 0" in result.line(), result


def test_a_store_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("mine")
    result = run_dfarun(tmp_path, *FAST, f"store={tmp_path / 'runs'}")
    assert result.code == 2 and "is a file; expected a folder" in result.line()
    assert (tmp_path / "runs").read_text() == "mine"


def test_a_folder_where_a_record_goes_resumes_from_the_last_checkpoint(tmp_path, make_cfg, caplog):
    cfg = make_cfg(*FAST, "max_epochs=2", f"store={tmp_path / 'runs'}")
    store.record_path(cfg, 0).mkdir(parents=True)
    with pytest.raises(OSError):
        runner.run(cfg)
    store.record_path(cfg, 0).rmdir()
    caplog.set_level("INFO", "dfarun")
    [rec] = runner.run_records(cfg)
    assert "resuming seeds [0] after epoch 1" in caplog.text and rec["epochs"] == 2  # the last epoch is retrained


def test_a_junk_file_at_a_records_path_is_not_a_finished_seed(tmp_path, make_cfg, caplog):
    cfg = make_cfg(*FAST, f"store={tmp_path / 'runs'}")
    path = store.record_path(cfg, 0)
    path.parent.mkdir(parents=True)
    for junk in ({"format": store.FORMAT}, {"format": store.FORMAT, "seed": 0, "stop": "converged"}):
        path.write_text(json.dumps(junk))
        [rec] = runner.run_records(cfg)
        assert rec["epochs"] == 1 and len(rec["history"]) == 1
        assert store.finished(path) == rec  # replaced by the real record
        assert f"ignoring {path}" in caplog.text


# --- signals and errors: one line, the right code, the last epoch's checkpoint kept --------------

def stop_after_first_checkpoint(monkeypatch, stop):
    """Call stop() right after the first epoch's checkpoint is written."""
    real = store.save_checkpoint

    def save_then_stop(path, state):
        real(path, state)
        stop()
    monkeypatch.setattr(store, "save_checkpoint", save_then_stop)


def checkpoints(runs: Path) -> list[dict]:
    return [store.load_checkpoint(p) for p in sorted((runs / "checkpoints").glob("*.pt"))]


def raising(err: BaseException):
    def stop():
        raise err
    return stop


@pytest.mark.parametrize("stop, code, words", [
    (raising(KeyboardInterrupt()), 130, ["interrupted", "rerun the same command to resume"]),  # SIGINT's
    (lambda: os.kill(os.getpid(), signal.SIGTERM), 143, ["SIGTERM", "rerun the same command to resume"]),
    pytest.param(lambda: os.kill(os.getpid(), signal.SIGHUP), 129, ["SIGHUP", "rerun the same command to resume"],
                 marks=pytest.mark.skipif(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN,
                                          reason="SIGHUP is ignored here (nohup), and so by dfarun")),
    (raising(RuntimeError("boom")), 1, ["synthetic 3x50_tanh dfa seeds [0]", "RuntimeError: boom", "DFARUN_DEBUG=1"]),
], ids=["ctrl-c", "sigterm", "sighup", "error"])
def test_a_stop_after_an_epoch_keeps_its_checkpoint_and_a_rerun_resumes(tmp_path, monkeypatch, stop, code, words):
    runs = tmp_path / "runs"
    args = [*FAST, "max_epochs=2", f"store={runs}"]
    stop_after_first_checkpoint(monkeypatch, stop)
    result = run_dfarun(tmp_path, *args)
    assert result.code == code, result
    line = result.line()
    for w in words:
        assert w in line, line
    assert [c["epoch"] for c in checkpoints(runs)] == [1]          # epoch 1 is kept
    assert not list(runs.glob("*.json")) and not list(runs.glob("locks/*"))  # no record, no lock held

    monkeypatch.undo()
    rerun = run_dfarun(tmp_path, *args)
    assert rerun.code == 0, rerun
    assert "resuming seeds [0] after epoch 1" in rerun.out
    [rec] = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    assert rec["epochs"] == 2 and checkpoints(runs) == []


def test_a_sighup_that_nohup_ignores_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with guard.catch_sigterm():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is guard.on_sigterm
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_inside_the_checkpoints_torch_save_is_an_interrupt(tmp_path, monkeypatch):
    # a Ctrl-C that lands inside torch.save's C++ zip writer comes out as the writer's own
    # RuntimeError ("unexpected pos ..."); it is still an interrupt: 130, the last whole
    # checkpoint kept, no temp file left (CI once caught this with a real SIGINT)
    runs = tmp_path / "runs"
    args = [*FAST, "max_epochs=3", f"store={runs}"]
    real, saves = torch.save, []

    class InterruptedFile:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def save(obj, f, *a, **k):
        saves.append(1)
        return real(obj, InterruptedFile(f) if len(saves) == 2 else f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    result = run_dfarun(tmp_path, *args)
    assert len(saves) == 2 and result.code == 130, result
    assert "interrupted" in result.line() and "unexpected" not in result.line()
    assert [c["epoch"] for c in checkpoints(runs)] == [1]
    assert not list(runs.glob("checkpoints/.*.tmp")) and not list(runs.glob("locks/*"))
    monkeypatch.undo()
    assert "resuming seeds [0] after epoch 1" in run_dfarun(tmp_path, *args).out


def test_ctrl_c_inside_torch_load_keeps_the_checkpoint(tmp_path, monkeypatch):
    # the same at resume: the checkpoint is fine, the user wants out; it is neither "unreadable"
    # nor replaced by a fresh start
    runs = tmp_path / "runs"
    args = [*FAST, "max_epochs=2", f"store={runs}"]
    stop_after_first_checkpoint(monkeypatch, raising(KeyboardInterrupt()))
    assert run_dfarun(tmp_path, *args).code == 130
    monkeypatch.undo()

    def load(*a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("PytorchStreamReader failed reading zip archive")  # noqa: B904 (as torch's C++ does)
    monkeypatch.setattr(torch, "load", load)
    result = run_dfarun(tmp_path, *args)
    assert result.code == 130 and "interrupted" in result.line(), result
    assert "ignoring" not in result.err
    monkeypatch.undo()
    assert [c["epoch"] for c in checkpoints(runs)] == [1]


@pytest.mark.parametrize("err, words", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ["out of memory", "fewer seeds"]),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"), ["out of memory"]),
    (OSError(28, "No space left on device", "/runs/x.json"), ["No space left on device (/runs/x.json)", "writable"]),
])
def test_failures_are_named_with_what_to_do(err, words):
    code, line = guard.describe(err)
    assert code == 1 and "\n" not in line and "rerun the same command to resume" in line
    for w in words:
        assert w in line, line


def test_a_job_too_big_for_the_machine_is_one_line(tmp_path):
    # no memory estimate up front: the allocator's refusal is the check, named by the guard
    runs = tmp_path / "runs"
    result = run_dfarun(tmp_path, *FAST, "model.width=1000000000000", f"store={runs}")  # 32 TB of weights
    assert result.code == 1 and "out of memory" in result.line(), result
    assert not list(runs.glob("*.json")) and not list(runs.glob("locks/*"))


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda cfg: 1 / 0)
    quiet = run_dfarun(tmp_path, *FAST, f"store={tmp_path / 'runs'}")
    assert quiet.code == 1 and "ZeroDivisionError: division by zero" in quiet.line()
    loud = run_dfarun(tmp_path, *FAST, f"store={tmp_path / 'runs'}", env={"DFARUN_DEBUG": "1"})
    assert loud.code == 1 and "Traceback" in loud.err and loud.err.splitlines()[-1].startswith(ONE_LINE)


def test_errors_cross_from_worker_processes():
    # joblib's workers pickle what a job raises: the message and the exit code must survive
    err = pickle.loads(pickle.dumps(ConfigError("max_epochs", 0, "expected an int >= 1")))
    assert isinstance(err, DfarunError) and str(err) == "max_epochs=0: expected an int >= 1"
    failed = pickle.loads(pickle.dumps(guard.JobFailed(130, "interrupted")))
    assert guard.describe(failed) == (130, "interrupted")


def test_a_real_sigint_to_the_console_script(tmp_path):
    runs = tmp_path / "runs"
    # noisy enough never to converge, and more epochs than the test waits for: the run is
    # still training when the signal comes, however late a loaded machine delivers it
    proc = subprocess.Popen([*DFARUN, *FAST, "dataset.train_size=2000", "dataset.noise=3", "max_epochs=100000",
                             f"store={runs}"],
                            cwd=tmp_path, env=cli_env(DFARUN_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a terminal's Ctrl-C meets a program with SIGINT's default action; a
                            # test run started in the background of a script (`make test &`)
                            # would pass on "ignore SIGINT" to the child instead
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("checkpoints/*.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal sends on Ctrl-C: the whole group
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"still running 60 s after SIGINT; its stderr ended:\n{err[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert Result(130, out, err).line().startswith("dfarun: interrupted")
    assert checkpoints(runs) and not list(runs.glob("*.json"))


@pytest.mark.parametrize("threads", ["0", "x", "100000"])
def test_a_bad_thread_count_is_refused_in_one_line(tmp_path, threads):
    result = run_dfarun(tmp_path, *FAST, f"store={tmp_path / 'runs'}", env={"DFARUN_THREADS": threads})
    assert result.code == 2
    assert f"DFARUN_THREADS='{threads}': expected an int from 1 to {4 * os.cpu_count()}" in result.line()
    assert not (tmp_path / "runs").exists()


def test_every_reader_of_a_torch_file_passes_on_a_ctrl_c_inside_torch_load(tmp_path, monkeypatch):
    # a checkpoint, the ZCA cache, saved weights: a Ctrl-C inside torch's C++ reader comes out
    # as its own error; none of them may take that for a bad file to skip, refit or start over
    from dfarun.report import figures
    from dfarun.engine import whiten

    def load(*a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("error return without exception set")  # what torch.load gave
    path = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, path)
    monkeypatch.setattr(torch, "load", load)
    for read in (lambda: store.load_checkpoint(path), lambda: store.checkpoint_seeds(path),
                 lambda: whiten._load(path, "key", 1)):
        with pytest.raises(SystemError) as info:
            read()
        assert guard.interrupted(info.value) and guard.describe(info.value)[0] == 130
    with pytest.raises(KeyboardInterrupt):
        figures.saved_mlp(path, 6)
    # a real error while unwinding from Ctrl-C (a full disk in a finally:) is still that error
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise OSError(28, "No space left on device", "/runs/x.json")
    except OSError as err:
        assert guard.describe(err)[0] == 1 and "No space left" in guard.describe(err)[1]


def test_a_full_disk_inside_torch_save_is_named_as_a_full_disk():
    # torch's C++ writer turns the file's OSError into its own RuntimeError ("unexpected pos")
    class Full(io.BytesIO):
        writes = 0

        def write(self, data):  # the disk fills up part-way through the file
            self.writes += 1
            if self.writes == 3:
                raise OSError(28, "No space left on device", "/runs/checkpoints/x.pt")
            return super().write(data)
    with pytest.raises(RuntimeError) as info:
        torch.save({"w": torch.zeros(100)}, Full())
    code, line = guard.describe(info.value)
    assert code == 1 and "No space left on device (/runs/checkpoints/x.pt)" in line and "unexpected" not in line


@pytest.mark.parametrize("env, expected", [("", "~/.cache/dfarun/data"), ("/data/here", "/data/here")])
def test_data_dir_comes_from_dfarun_data_dir_and_an_empty_one_is_unset(make_cfg, monkeypatch, env, expected):
    monkeypatch.setenv("DFARUN_DATA_DIR", env)
    assert make_cfg().data_dir == expected


def test_an_empty_data_dir_names_data_dir(tmp_path):
    assert "data_dir='': expected a folder (data_dir=. for the current one)" in refused(tmp_path, "data_dir=")


def test_a_path_that_starts_with_a_bare_tilde_is_home(tmp_path):
    """zsh passes `store=~/runs` on as it is (bash expands it); Hydra's grammar has no bare ~."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    for flags, where in (([], "hydra.run.dir=~/work"), (["-m"], "hydra.sweep.dir=~/sweep")):
        result = run_dfarun(cwd, *flags, *FAST, "store=~/runs", "data_dir=~/data", where, env={"HOME": str(home)})
        assert result.code == 0, result
    assert (home / "work").is_dir() and (home / "sweep" / "multirun.yaml").is_file()  # Hydra's folders too
    assert len(list((home / "runs").glob("*.json"))) == 1  # the sweep's one job found the run's record
    assert os.listdir(cwd) == []  # no folder named ~
    line = refused(cwd, "store=~/a,~/b", flags=("-m",))  # a sweep of such paths needs the quotes
    assert "quote a path that starts with ~, as data_dir='~/a'" in line


def test_a_run_started_in_a_folder_it_cannot_write_to_is_fine(tmp_path, monkeypatch):
    """A single run writes nothing into its working folder (hydra.run.dir: .), only its store."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    monkeypatch.chdir(ro)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if Path(path).absolute() == ro and mode & os.W_OK else real(path, mode, **kw)))  # as root sees none
    assert len(cli.check_args([*FAST, f"store={tmp_path / 'runs'}"])) == 1


def test_the_last_line_on_a_dead_terminal_still_gives_the_exit_code(monkeypatch):
    """After SIGHUP stderr may be gone with the terminal (EIO): the code must still come out."""
    class Gone(io.StringIO):
        def write(self, text):
            raise OSError(5, "Input/output error")
    monkeypatch.setattr("sys.stderr", Gone())
    monkeypatch.setattr(guard, "_signalled", [signal.SIGHUP])
    assert guard.report(KeyboardInterrupt()) == 128 + signal.SIGHUP


def test_a_config_dir_is_composed_with_and_checked_before_anything_runs(tmp_path):
    """--config-dir adds options (here a model of one's own): they are offered, and a bad job of
    a sweep that uses them is refused before the good one trains."""
    extra, cwd = tmp_path / "extra", tmp_path / "cwd"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "tiny_tanh.yaml").write_text(
        "name: tiny_tanh\nlabel: Tiny Tanh\ndepth: 1\nwidth: 7\nactivation: tanh\n")
    cwd.mkdir()
    base = [a for a in FAST if not a.startswith(("model=", "max_epochs="))] + [f"store={cwd / 'runs'}"]
    bad = run_dfarun(cwd, "-m", "--config-dir", str(extra), *base, "model=tiny_tanh", "max_epochs=1,0")
    assert bad.code == 2 and "max_epochs=0: expected an int >= 1" in bad.line() and os.listdir(cwd) == []
    unknown = run_dfarun(cwd, "--config-dir", str(extra), *base, "model=nope", "max_epochs=1")
    assert unknown.code == 2 and "2x800_tanh" in unknown.line() and "tiny_tanh" in unknown.line()
    assert "no such folder" in run_dfarun(cwd, "--config-dir", str(tmp_path / "nope"), *base).line()
    good = run_dfarun(cwd, "--config-dir", str(extra), *base, "model=tiny_tanh", "max_epochs=1")
    assert good.code == 0, good
    assert len(list((cwd / "runs").glob("synthetic_tiny_tanh_*.json"))) == 1


def test_what_a_config_dir_cannot_do_is_said_or_left_to_hydra(tmp_path):
    """An option of the --config-dir with the name of one of ours would never run (Hydra takes
    ours first): refused. A search path of the user's own is left to Hydra, unchecked, rather
    than refused for options only Hydra would find."""
    extra, other = tmp_path / "extra", tmp_path / "other"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "2x800_tanh.yaml").write_text("name: 2x800_tanh\nlabel: Mine\ndepth: 1\nwidth: 7\n")
    with pytest.raises(DfarunError, match="stands where dfarun's own model/2x800_tanh.yaml does"):
        cli.check_args(["--config-dir", str(extra), *FAST])
    (extra / "model" / "2x800_tanh.yaml").write_bytes((CONF_DIR / "model" / "2x800_tanh.yaml").read_bytes())
    assert len(cli.check_args(["--config-dir", str(extra), *FAST])) == 1  # a copy of ours loses nothing
    (extra / "hydra" / "launcher").mkdir(parents=True)  # deeper groups too
    (extra / "hydra" / "launcher" / "parallel.yaml").write_text("n_jobs: 3\n")
    with pytest.raises(DfarunError, match="own hydra/launcher/parallel.yaml"):
        cli.check_args(["--config-dir", str(extra), *FAST])
    with pytest.raises(DfarunError, match="--config-dir='': no such folder"):
        cli.check_args(["--config-dir=", *FAST])
    (other / "model").mkdir(parents=True)
    (other / "model" / "mine.yaml").write_text("name: mine\nlabel: Mine\ndepth: 1\nwidth: 7\nactivation: tanh\n")
    assert cli.check_args([*FAST, f"hydra.searchpath=[file://{other}]", "model=mine"]) == []
    assert preflight.expand_home("--config-dir=~/x") == f"--config-dir={os.path.expanduser('~/x')}"
