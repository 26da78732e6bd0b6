"""Argument schemas for network specs, and `SpecError`.

A schema maps each canonical argument name to an `Arg`: a checker that returns the
normalized value or raises `_Invalid("expected ..., got ...")`, a default and the
accepted aliases. `check_args` resolves aliases, rejects unknown or duplicate
arguments (suggesting close names) and prefixes every message with the location,
e.g. ``[1] (MaxPool).window_shape: expected a positive int or list of positive
ints, got -2``. Plain checks rather than pydantic: they are short, need no model
classes per layer, and give exactly these messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxlab.errors import ConfigError
from nets.activations import ACTIVATIONS, activation_names


class SpecError(ConfigError):
    """A network spec (layer list, graph or builtin module) is invalid.

    The message starts with the location: ``[i] (Layer)`` for the i-th entry of a
    layer list, ``node 'name' (Layer)`` for a graph node, ``graph:`` for the graph
    structure and ``module (Name)`` for a builtin module; then ``.argument`` when
    one argument is at fault.
    """


class _Invalid(Exception):
    """A value failed a check; the message says what was expected."""


REQUIRED = object()  # Sentinel default: the argument must be given.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument of a layer or module.

    Attributes:
      check: returns the normalized value or raises `_Invalid`.
      default: the value when absent (`REQUIRED` if it must be given). Defaults are
        not checked.
      aliases: other accepted names (Keras/polyaxon style).
    """

    check: Callable[[Any], Any]
    default: Any = REQUIRED
    aliases: tuple[str, ...] = ()


def _got(value: Any) -> str:
    return f"got {value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def pos_int(value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise _Invalid(f"expected a positive int, {_got(value)}")
    return value


def int_(value: Any) -> int:
    if not _is_int(value):
        raise _Invalid(f"expected an int, {_got(value)}")
    return value


def ints_or_int(value: Any) -> int | tuple[int, ...]:
    if _is_int(value):
        return value
    if isinstance(value, list | tuple) and value and all(map(_is_int, value)):
        return tuple(value)
    raise _Invalid(f"expected an int or a non-empty list of ints, {_got(value)}")


def pos_ints(*, length: int | None = None) -> Callable[[Any], Any]:
    """A positive int, or a list of positive ints (of `length` if given)."""
    what = "positive ints" if length is None else f"{length} positive ints"

    def check(value: Any) -> int | tuple[int, ...]:
        if _is_int(value) and value > 0:
            return value
        if (
            isinstance(value, list | tuple)
            and value
            and (length is None or len(value) == length)
            and all(_is_int(v) and v > 0 for v in value)
        ):
            return tuple(value)
        raise _Invalid(f"expected a positive int or list of {what}, {_got(value)}")

    return check


def pos_int_list(value: Any) -> tuple[int, ...]:
    if (
        isinstance(value, list | tuple)
        and value
        and all(_is_int(v) and v > 0 for v in value)
    ):
        return tuple(value)
    raise _Invalid(f"expected a non-empty list of positive ints, {_got(value)}")


def shape(value: Any) -> tuple[int, ...]:
    """A reshape target: ints > 0, at most one -1."""
    if (
        isinstance(value, list | tuple)
        and value
        and all(_is_int(v) and (v > 0 or v == -1) for v in value)
        and list(value).count(-1) <= 1
    ):
        return tuple(value)
    raise _Invalid(
        f"expected a non-empty list of positive ints (at most one -1), {_got(value)}"
    )


def bool_(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected a bool, {_got(value)}")
    return value


def number(
    *, low: float, high: float, low_open: bool = False, high_open: bool = True
) -> Callable[[Any], float]:
    """A float (an int is accepted) in the interval; `math.inf` for no bound."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if low == 0 and high == math.inf:
        what = "a positive float" if low_open else "a non-negative float"
    else:
        hi = "inf" if high == math.inf else f"{high:g}"
        what = f"a float in {left}{low:g}, {hi}{right}"

    def check(value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise _Invalid(f"expected {what}, {_got(value)}")
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if below or above:
            raise _Invalid(f"expected {what}, {_got(value)}")
        return float(value)

    return check


def identifier(value: Any) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise _Invalid(
            "expected a name made of letters, digits and '_' (not starting with a "
            f"digit), {_got(value)}"
        )
    return value


def padding(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in ("SAME", "VALID"):
        raise _Invalid(f"expected 'SAME' or 'VALID', {_got(value)}")
    return value.upper()


def choice(*options: str) -> Callable[[Any], str]:
    """One of `options` (case-insensitive), returned lower-case."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise _Invalid(f"expected one of {', '.join(options)}, {_got(value)}")
        return value.lower()

    return check


def activation(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise _Invalid(
            f"unknown activation {value!r} (known: {', '.join(activation_names())})"
        )
    return value.lower()


def regularizer(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("l2", "l2_regularizer"):
        return "l2"
    raise _Invalid(f"expected 'l2' or null, {_got(value)}")


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Accepts None as well as what `check` accepts."""

    def check_optional(value: Any) -> Any:
        return None if value is None else check(value)

    return check_optional


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``''``."""
    candidates = list(candidates)
    lowered: dict[str, str] = {}
    for c in candidates:  # The first spelling wins (canonical names come first).
        lowered.setdefault(c.lower(), c)
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[match[0]]!r}?)" if match else ""


def location(where: str, label: str | None) -> str:
    """``"[1] (MaxPool)"``, ``"node 'c' (Conv2D)"``, ``"(Linear)"`` or ``"[1]"``."""
    if label is None:
        return where
    return f"{where} ({label})" if where else f"({label})"


def check_args(
    args: Any, schema: Mapping[str, Arg], *, where: str, label: str
) -> tuple[dict[str, Any], set[str]]:
    """Validates `args` against `schema`.

    Args:
      args: the user's mapping (None means no arguments).
      schema: canonical name -> `Arg`.
      where: location prefix, e.g. ``"[1]"`` or ``"node 'c'"``.
      label: the layer or module name as written.

    Returns:
      `(values, given)`: every canonical argument (defaults filled in) and the
      canonical names the user set.

    Raises:
      SpecError: naming the location and the argument.
    """
    loc = location(where, label)
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise SpecError(f"{loc}: expected a mapping of arguments, {_got(args)}")
    alias_of = {name: name for name in schema}
    for name, arg in schema.items():
        alias_of.update({alias: name for alias in arg.aliases})
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in args.items():
        if not isinstance(key, str):
            raise SpecError(f"{loc}: argument names must be strings, {_got(key)}")
        if key not in alias_of:
            raise SpecError(f"{loc}: unknown argument {key!r}{suggest(key, alias_of)}")
        canonical = alias_of[key]
        if canonical in values:
            raise SpecError(
                f"{loc}.{key}: same argument as {written[canonical]!r}; give only one"
            )
        try:
            values[canonical] = schema[canonical].check(value)
        except _Invalid as e:
            raise SpecError(f"{loc}.{key}: {e}") from None
        written[canonical] = key
    given = set(values)
    for name, arg in schema.items():
        if name in values:
            continue
        if arg.default is REQUIRED:
            raise SpecError(f"{loc}: missing required argument {name!r}")
        values[name] = arg.default
    return values, given
