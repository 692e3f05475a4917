"""The last line of defence: whatever stops `dfarun` ends in one line on stderr that says what
failed and what to do, and an exit code a script can act on (README: Errors and exit codes).

    0    done
    1    a job failed (out of memory, a full disk, a bug)
    2    bad input: a value, a file or a folder (nothing was trained)
    130  interrupted (Ctrl-C); 143 stopped by SIGTERM, 129 by SIGHUP (a closed terminal or ssh
         session): rerunning the same command resumes

Nothing trained is lost on the way out: each epoch's checkpoint is written atomically before
the next epoch starts, and records are written the moment a seed is final; an exception or a
signal only unwinds (releasing locks), it removes neither. The traceback is printed only
under DFARUN_DEBUG=1.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import traceback

from omegaconf.errors import OmegaConfBaseException

from dfarun.errors import DfarunError, chain as _chain, interrupted

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130
RESUME = "rerun the same command to resume from the last finished epoch"
_signalled: list[int] = []  # the signal that stopped this process, once one has


class JobFailed(Exception):
    """A job's failure in words, with its exit code: crosses from joblib's worker processes."""

    def __init__(self, code: int, line: str):
        super().__init__(line)
        self.code = code

    def __reduce__(self):
        return JobFailed, (self.code, str(self))


def debug() -> bool:
    return os.environ.get("DFARUN_DEBUG", "") not in ("", "0")


def describe(err: BaseException) -> tuple[int, str]:
    """(exit code, one line) for whatever ended the run."""
    if isinstance(err, JobFailed):
        return err.code, str(err)
    if interrupted(err):
        if _signalled:
            name = signal.Signals(_signalled[0]).name
            return 128 + _signalled[0], f"stopped by {name}; finished seeds keep their records: {RESUME}"
        return INTERRUPTED, f"interrupted; finished seeds keep their records: {RESUME}"
    if isinstance(err, DfarunError):
        return BAD_INPUT, f"error: {err}"
    from hydra.errors import HydraException
    if isinstance(err, (HydraException, OmegaConfBaseException)):  # composing, past check_args
        return BAD_INPUT, f"error: {compose_error(err)}"
    text = f"{type(err).__name__}: {first_line(err)}"
    if isinstance(err, MemoryError) or _says_memory(err):
        return FAILED, (f"error: out of memory ({_cut(text)}); use fewer seeds per job, a smaller model, "
                        f"batch_size or data set, or another device; then {RESUME}")
    # an OSError, or what torch's C++ writer made of one ("unexpected pos" after a full disk)
    if (os_err := next((e for e in _chain(err) if isinstance(e, OSError)), None)) is not None:
        where = f" ({os_err.filename})" if getattr(os_err, "filename", None) else ""
        why = os_err.strerror or f"{type(os_err).__name__}: {first_line(os_err)}"
        return FAILED, (f"error: {why}{where}; make sure the folder is there, writable and "
                        f"not full, then {RESUME}")
    return FAILED, (f"error: unexpected {_cut(text)}; {RESUME}, or run it with DFARUN_DEBUG=1 to see the "
                    f"traceback and report it")


def in_job(describe_job: str, call):
    """Run one job (the task function's body). In a worker process (joblib, submitit) an error,
    and Ctrl-C, cross back as JobFailed, which pickles; in the main process a Ctrl-C stays a
    KeyboardInterrupt, so that it stops the whole sweep."""
    try:
        return call()
    except (DfarunError, JobFailed):
        raise
    except (KeyboardInterrupt, Exception) as err:
        if interrupted(err):
            if multiprocessing.parent_process() is None:
                if isinstance(err, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from err
            code, line = describe(KeyboardInterrupt())
            raise JobFailed(code, line) from None
        code, line = describe(err)
        raise JobFailed(code, line.replace("error: ", f"error: {describe_job}: ", 1)) from err


def report(err: BaseException) -> int:
    """Print the one line (and, under DFARUN_DEBUG=1, the traceback); return the exit code."""
    code, line = describe(err)
    if debug():
        traceback.print_exception(err)
    # a value with a line break (or another control character) in it is shown escaped: one line
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in line)
    try:
        print(f"dfarun: {line}", file=sys.stderr, flush=True)
    except OSError:  # stderr is gone with the terminal (SIGHUP): the exit code still says it
        pass
    return code


STOPPING = (signal.SIGTERM, signal.SIGHUP)  # besides SIGINT (Ctrl-C): a time limit or `kill`; a hang-up


def on_sigterm(signum, frame) -> None:
    """SIGTERM (a cluster's time limit, `kill`) and SIGHUP (the terminal or ssh session closed)
    unwind like Ctrl-C: locks released, the last epoch's checkpoint kept; a second signal
    while unwinding is ignored."""
    if not _signalled:
        _signalled.append(signum)
        raise KeyboardInterrupt


class catch_sigterm:
    """Install on_sigterm for SIGTERM and SIGHUP for the duration (main thread only: Python
    delivers signals there). A SIGHUP that is ignored (`nohup`) stays ignored."""

    def __enter__(self):
        _signalled.clear()
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOPPING:
                if signal.getsignal(sig) is not signal.SIG_IGN or sig == signal.SIGTERM:
                    self.previous[sig] = signal.signal(sig, on_sigterm)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _says_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def compose_error(err: BaseException) -> str:
    """Hydra's or OmegaConf's words for a config that does not compose, in one line, with the
    OmegaConf error under Hydra's."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += f" ({first_line(err.__cause__)})"
    return f"cannot compose the config: {text}"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _cut(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
