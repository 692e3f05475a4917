"""Checking a JSON value against an annotated type: `checker(tp)`.

A type says what a value may hold: `Annotated[T, Rule(ok, expected)]` is a value that passes
`ok`; a TypedDict is an object with those keys (one annotated with `Absent` may be missing; keys
it does not name are kept as they are); `Annotated[T, SomeTypedDict]` is that TypedDict;
`tuple[Row, ...]` is a list of rows. A wrong value raises `Invalid` naming the part that is
wrong. Knows nothing of what is checked (run/record.py declares the run record's types).
"""
import reprlib
import typing
from typing import Annotated, Callable, NamedTuple


class Rule(NamedTuple):
    """What a field may hold: `ok(value)`, worded as `expected` in the error."""
    ok: Callable[[object], bool]
    expected: str


class Absent(NamedTuple):
    """A key a TypedDict may lack (records made before it): the value it then has."""
    value: object


class Invalid(ValueError):
    """A missing or wrong field; the message starts with its dotted name."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: {why}")
        self.name, self.why = name, why

    def within(self, outer: str) -> "Invalid":
        """The same error, named from one level up: `outer` before this name."""
        return Invalid(outer + self.name, self.why)


def checker(tp) -> Callable[[object], object]:
    """check(value) for a field's type: the value (a tuple for a history), or Invalid naming
    the part of it that is wrong ("", ".epoch", "[3].epoch"); the caller puts the field's name
    before it. Names are made only for an error: a store holds a million history rows."""
    if typing.get_origin(tp) is Annotated:
        meta = typing.get_args(tp)[1:]
        rule = next((m for m in meta if isinstance(m, Rule)), None)
        if rule is None:  # Annotated[T, SomeTypedDict]: that TypedDict where present
            return checker(next(m for m in meta if isinstance(m, type)))
        ok, expected = rule

        def check(v):
            if not ok(v):
                raise Invalid("", f"{reprlib.repr(v)}, expected {expected}")
            return v
        return check
    if typing.get_origin(tp) is tuple:  # the history: a list of rows
        row = checker(typing.get_args(tp)[0])

        def rows(v):
            if not isinstance(v, list):
                raise Invalid("", f"{reprlib.repr(v)}, expected a list")
            for i, r in enumerate(v):
                try:
                    row(r)
                except Invalid as err:
                    raise err.within(f"[{i}]") from None
            return tuple(v)
        return rows
    hints = typing.get_type_hints(tp, include_extras=True)  # a TypedDict: its keys, the rest kept
    keys = [(k, checker(t), _ok(t), any(isinstance(m, Absent) for m in typing.get_args(t)[1:]))
            for k, t in hints.items()]

    def obj(v):
        if type(v) is not dict:
            raise Invalid("", f"{reprlib.repr(v)}, expected an object")
        for k, check, ok, may_lack in keys:
            if k in v:
                if ok is None or not ok(v[k]):  # ok: a Rule's own test, the fast way for history rows
                    try:
                        check(v[k])
                    except Invalid as err:
                        raise err.within(f".{k}") from None
            elif not may_lack:
                raise Invalid(f".{k}", "missing")
        return v
    return obj


def _ok(tp) -> Callable[[object], bool] | None:
    """A Rule-typed field's test; None for a nested type."""
    meta = typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ()
    return next((m.ok for m in meta if isinstance(m, Rule)), None)
