"""Config dataclasses: ``key=value`` overrides (the CLI's ``--set``) and plain-dict export.

Every method and runner has a ``@dataclass`` config with documented defaults. Overrides use
dotted keys for nested dataclasses (``--set train.lr=1e-3``) and are parsed by the field's type:
ints, floats (fractions such as ``8/255`` allowed), bools, strings, ``None``, and comma-separated
tuples or lists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, TypeVar, Union

from obstructlib.errors import ConfigError

T = TypeVar("T")

_NONE = {"none", "null", ""}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_scalar(key: str, text: str, typ: Any) -> Any:
    if typ is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"--set {key}={text}: expected true or false")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected an integer") from None
    if typ is float:
        try:
            return float(Fraction(text.strip())) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--set {key}={text}: expected a number such as 0.5 or 8/255") from None
    if typ is str or typ is Any:
        return text
    raise ConfigError(f"--set {key}: fields of type {typ} cannot be set from the command line")


def parse_value(key: str, text: str, typ: Any) -> Any:
    """Parse ``text`` as a value of the annotated type ``typ`` (used by :func:`apply_overrides`)."""
    origin = typing.get_origin(typ)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.strip().lower() in _NONE and len(args) < len(typing.get_args(typ)):
            return None
        errors = []
        for arg in args:
            try:
                return parse_value(key, text, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"--set {key}={text}: cannot parse")
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if text not in choices:
            raise ConfigError(f"--set {key}={text}: choose one of {', '.join(map(str, choices))}")
        return text
    if origin in (tuple, list, Sequence) or typ in (tuple, list):
        args = typing.get_args(typ)
        inner = args[0] if args else str
        items = [t for t in text.split(",") if t.strip()]
        values = [parse_value(key, t.strip(), inner) for t in items]
        return tuple(values) if origin is tuple or typ is tuple else values
    return _parse_scalar(key, text, typ)


def _fields(cfg: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg)}


def set_field(cfg: T, key: str, text: str) -> T:
    """Return a copy of dataclass ``cfg`` with dotted ``key`` set from ``text``."""
    head, _, rest = key.partition(".")
    fields = _fields(cfg)
    if head not in fields:
        raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(type(cfg))
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"--set {key}: {head!r} has no sub-keys")
        return dataclasses.replace(cfg, **{head: set_field(current, rest, text)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"--set {key}: {head!r} is a group; set one of its keys ({head}.NAME=VALUE)")
    new = dataclasses.replace(cfg, **{head: parse_value(key, text, hints[head])})
    return new


def apply_overrides(cfg: T, overrides: Sequence[str] | None) -> T:
    """Apply ``key=value`` strings to a dataclass config (returns a new config).

    Args:
        cfg: a dataclass instance.
        overrides: strings such as ``"eps=8/255"`` or ``"train.lr=1e-3"``.

    Raises:
        ConfigError: a malformed string, an unknown key or a value of the wrong type.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     eps: float = 0.1
        >>> apply_overrides(C(), ["eps=8/255"]).eps
        0.03137254901960784
    """
    for item in overrides or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is malformed: write it as key=value (e.g. --set eps=8/255)")
        cfg = set_field(cfg, key.strip(), value.strip())
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    out = dataclasses.asdict(cfg)

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(out)
