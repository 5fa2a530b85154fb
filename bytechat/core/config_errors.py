"""pydantic's validation errors as the one line a ConfigError says (bytechat.core.config):
"dotted.key: problem", the unknown key's known siblings, a bound as "in [0, 1)"."""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo


class Invalid(ValueError):
    """Raised by a validator: `key` (dotted, relative to where pydantic reports the error;
    "" for that place itself) has `problem`."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key, self.problem = key, problem


def require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise Invalid(key, problem)


_EXPECTED = {
    "int_type": "int",
    "float_type": "float",
    "bool_type": "bool",
    "string_type": "str",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
}
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_BOUNDS = {"gt": "> ", "ge": ">= ", "lt": "< ", "le": "<= "}


def _field_at(root: Any, loc: tuple) -> tuple[Any, FieldInfo | None]:
    """(the type, the pydantic field) at loc below root: dataclass fields by name, dict
    values by any key. (None, None) where loc leads nowhere known."""
    tp, info = root, None
    for part in loc:
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        fields = getattr(tp, "__pydantic_fields__", None)
        if fields is not None and part in fields:
            info = fields[part]
            tp = info.annotation
        elif typing.get_origin(tp) is dict:
            tp, info = typing.get_args(tp)[1], None
        else:
            return None, None
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp, info


def _range(info: FieldInfo | None) -> str:
    """A field's bounds as text: "> 0", "in [0, 1)"."""
    found = {}
    for constraint in info.metadata if info else ():
        for name in _BOUNDS:
            if isinstance(getattr(constraint, name, None), (int, float)):
                found[name] = getattr(constraint, name)
    lo = next(((name, found[name]) for name in ("gt", "ge") if name in found), None)
    hi = next(((name, found[name]) for name in ("lt", "le") if name in found), None)
    if lo and hi:
        return f"in {'(' if lo[0] == 'gt' else '['}{lo[1]:g}, {hi[1]:g}{')' if hi[0] == 'lt' else ']'}"
    return " and ".join(f"{_BOUNDS[name]}{value:g}" for name, value in found.items()) or "in range"


def _describe(error: dict, root: Any) -> tuple[tuple, str]:
    """(dotted path parts, problem) of one pydantic error."""
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = f"got {type(value).__name__} {value!r}"
    if kind == "missing":
        return loc, "missing key"
    if kind in _UNKNOWN:
        known = getattr(_field_at(root, loc[:-1])[0], "__pydantic_fields__", {})
        return loc, f"unknown key (known: {', '.join(known)})"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, {got}"
    if kind == "literal_error":
        return loc, f"expected {ctx['expected']}, {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        info = _field_at(root, loc)[1]
        hint = f" ({info.description})" if info is not None and info.description else ""
        return loc, f"must be {_range(info)}, got {value!r}{hint}"
    if kind == "finite_number":
        return loc, f"must be a finite number, got {value!r}"
    if kind == "too_short":
        return loc, f"needs at least {ctx['min_length']} entry, got {ctx.get('actual_length')}"
    cause = ctx.get("error")
    if isinstance(cause, Invalid):
        return loc + tuple(cause.key.split(".") if cause.key else ()), cause.problem
    return loc, error["msg"]


def one_line(exc: ValidationError, root: Any, key: str = "") -> str:
    """The first of pydantic's errors (unknown keys first) as "dotted.key: problem"; key
    is prepended to the path."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] not in _UNKNOWN)
    loc, problem = _describe(errors[0], root)
    path = ".".join(str(part) for part in ((key,) if key else ()) + loc) or "top level"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {problem}{more}"
