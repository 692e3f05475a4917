"""The errors a user sees, and the two facts every layer needs about them.

`DfarunError` is a problem the user can fix (one line, exit code 2); `ConfigError` names the
key, the bad value and what is allowed (`check` raises one unless a condition holds).
`interrupted` tells a Ctrl-C apart from a real failure. `check_folder` is the one check of a
folder a job will read or write. This module imports only the standard library, so every layer
may use it.
"""
from __future__ import annotations

import os
import reprlib
from pathlib import Path


class DfarunError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class ConfigError(DfarunError):
    def __init__(self, key: str, value, allowed: str):
        super().__init__(f"{key}={_REPR.repr(value)}: {allowed}")

    def __reduce__(self):  # pickled by joblib's workers: rebuild from the message
        return DfarunError, (str(self),)


_REPR = reprlib.Repr()  # a huge value is shown cut, so that the error stays one readable line
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxlong = 160, 160, 12, 40


def check(ok: bool, key: str, value, allowed: str) -> None:
    """ConfigError(key, value, allowed) unless ok."""
    if not ok:
        raise ConfigError(key, value, allowed)


def check_folder(key: str, value: str, purpose: str, write: bool = True) -> None:
    """`value` is no file; with write=True, a folder it can write to, or can make (no file in
    the way, and the nearest existing folder above is writable)."""
    check(str(value).strip() != "", key, value, f"expected a folder {purpose}")
    try:
        path = Path(value).expanduser()
        if path.is_symlink() and not path.exists():  # a store linked to a disk not mounted
            raise ConfigError(key, value, f"is a broken symbolic link (to {os.readlink(path)}); "
                                          f"expected a folder {purpose}")
        check(not path.exists() or path.is_dir(), key, value, f"is a file; expected a folder {purpose}")
        if not write:
            return
        near = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    except (OSError, RuntimeError, ValueError) as err:  # a name too long, no permission, no $HOME for ~
        raise ConfigError(key, value, f"cannot be used ({getattr(err, 'strerror', None) or err}); "
                                      f"expected a folder {purpose}") from None
    check(near.is_dir(), key, value, f"{near} is a file, so the folder cannot be made; "
                                      f"expected a folder {purpose}")
    check(os.access(near, os.W_OK | os.X_OK), key, value, f"{near} is not writable; expected a folder {purpose}")


def interrupted(err: BaseException) -> bool:
    """Ctrl-C or SIGTERM ended this, directly or not: a KeyboardInterrupt that lands inside
    torch's C++ code comes out as that code's own error (torch.save: RuntimeError "unexpected
    pos ...", torch.load: SystemError), with the interrupt as its context. A failure of its
    own while unwinding (a full disk: OSError, MemoryError) is not hidden behind the interrupt,
    nor is an error raised `from None`."""
    for e in chain(err):
        if isinstance(e, KeyboardInterrupt):
            return True
        if isinstance(e, (OSError, MemoryError)):
            return False
    return False


def chain(err: BaseException | None):
    """err, then what it was raised from or while handling (not past `from None`)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__ if err.__cause__ is not None else None if err.__suppress_context__ else err.__context__
