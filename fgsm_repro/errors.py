"""The one exception type the CLI turns into a one-line error message, and the one reading of a
pydantic validation error that every such message of a config is made from."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import ValidationError


class ReproError(Exception):
    """A user-facing error: bad config, missing or corrupted data, bad arguments.

    The CLI prints ``error: <message>`` on one line and exits with status 2; nothing else.
    """


class NestedFieldError(ValueError):
    """A validation error inside a nested config, keeping the field path for the one-line message."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc, self.msg = loc, msg


class FieldProblem(NamedTuple):
    """The one problem of a pydantic validation error that a one-line message shows."""

    loc: tuple  # the field's path (a nested config's own fields included)
    msg: str  # "unknown key" for a key the model does not have
    unknown_key: bool
    got: str  # ", got <the value given>", or "" where there is none to show
    count: int  # how many problems the error has in all


def field_problem(err: ValidationError) -> FieldProblem:
    """The problem to show of `err`: an unknown key first (a misspelt key also makes its correct
    spelling "missing"), with the path into a nested config (a :class:`NestedFieldError`) and
    without the location parts that name a union's member types."""
    first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc, msg, value = tuple(first["loc"]), first["msg"].removeprefix("Value error, "), first.get("input")
    nested = first.get("ctx", {}).get("error")
    if isinstance(nested, NestedFieldError):  # a nested config's own field (attack.eps)
        loc, msg = loc + tuple(nested.loc), nested.msg
    unknown = first["type"] == "extra_forbidden"
    hidden = unknown or first["type"] == "missing" or isinstance(value, dict) or nested is not None
    loc = tuple(p for p in loc if isinstance(p, int) or "[" not in p)  # a union member: function-after[…]
    return FieldProblem(loc, "unknown key" if unknown else msg, unknown, "" if hidden else f", got {value!r}",
                        err.error_count())
