"""The console scripts (`dfarun`, `dfarun-tables`, `dfarun-figures`), guarded from their first line.

Each script's module imports hydra, torch or matplotlib: a second or more in which a Ctrl-C
would otherwise end in a traceback, before the script's own guard exists. So the scripts start
here, where nothing heavy is imported yet, and two ways out are handled for all three:
  - Ctrl-C before the script's own guard takes over: one line, exit code 130;
  - a reader that went away (`dfarun-tables | head -1`): the rest of the output is dropped
    quietly. Where that stopped the script, the exit code is 141 (128 + SIGPIPE, as a shell
    reports a tool that SIGPIPE stopped); otherwise it is the script's own. Training does not
    stop for it: `dfarun`'s progress lines are dropped, its records and checkpoints are
    written as ever (cli.main), and it exits as it would have.
This module imports only the standard library.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

BROKEN_PIPE = 141


def dfarun() -> None:
    _guarded("dfarun", lambda: importlib.import_module("dfarun.cli.main").main)


def tables() -> None:
    _guarded("dfarun-tables", lambda: importlib.import_module("dfarun.report.tables").cli)


def figures() -> None:
    _guarded("dfarun-figures", lambda: importlib.import_module("dfarun.report.figures").cli)


def _guarded(name: str, load: Callable[[], Callable[[], None]]) -> None:
    try:
        load()()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away, and that stopped the script
        _drop_stdout()
        sys.exit(BROKEN_PIPE)
    except OSError as err:  # the scripts report their files' errors themselves: this is stdout's (/dev/full)
        _cannot_write(name, err)
    except SystemExit:
        _flush(name)
        raise
    _flush(name)


def _flush(name: str) -> None:
    """Flush stdout now, not at the interpreter's exit, where a closed pipe is a traceback. The
    exit code stays the script's: a reader that had all it wanted is not a failure."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
    except OSError as err:
        _cannot_write(name, err)


def _cannot_write(name: str, err: OSError) -> None:
    _drop_stdout()
    print(f"{name}: error: cannot write the output ({err.strerror or err})", file=sys.stderr, flush=True)
    sys.exit(1)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout closed or replaced: nothing left to flush into
        pass
