"""Config dataclasses: ``key=value`` overrides (the CLI's ``--set``) and plain-dict export.

Every method and runner has a ``@dataclass`` config with documented defaults. Overrides use
dotted keys for nested dataclasses (``--set train.lr=1e-3``) and are parsed by the field's type:
ints, floats (fractions such as ``8/255`` allowed), bools, strings, ``None``, and comma-separated
tuples or lists.

A config never changes itself: ``validate()`` only checks, so ``results.json`` records exactly
what ran. Where one value feeds several sub-configs (a runner's one budget ``eps`` for UC, EM and
TAP), the class declares ``LINKED = {"eps": ("uc.eps", "em.eps", "tap.eps")}``: ``--set eps=8/255``
writes the field and every linked key at once, and ``validate()`` refuses a later
``--set uc.eps=...`` that disagrees (:func:`check_linked`) instead of overwriting it. A renamed key
keeps working through ``ALIASES = {"old": ("new.key",)}``. Overrides work on a deep copy; the
config passed in is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar, Union

from obstructlib.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
DataclassT = TypeVar("DataclassT", bound="DataclassInstance")

_NONE = {"none", "null", ""}
MAX_SEED = 2**31 - 1  # numpy and every derived seed (derive_seed is 31-bit) stay in range
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
            number = int(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected an integer") from None
        name = key.rsplit(".", 1)[-1]
        if (name == "seed" or name.endswith("_seed")) and not 0 <= number <= MAX_SEED:
            raise ConfigError(f"--set {key}={text}: a seed is an integer from 0 to {MAX_SEED}")
        return number
    if typ is float:
        try:
            value = float(Fraction(text.strip())) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--set {key}={text}: expected a number such as 0.5 or 8/255") from None
        if not math.isfinite(value):
            raise ConfigError(f"--set {key}={text}: expected a finite number")
        return value
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
        item_types = typing.get_args(typ)
        inner = item_types[0] if item_types else str
        items = [t for t in text.split(",") if t.strip()]
        values = [parse_value(key, t.strip(), inner) for t in items]
        fixed = origin is tuple and len(item_types) > 1 and item_types[-1] is not Ellipsis
        if fixed and len(values) != len(item_types):  # e.g. betas: exactly two
            raise ConfigError(f"--set {key}={text}: give {len(item_types)} comma-separated values, not {len(values)}")
        return tuple(values) if origin is tuple or typ is tuple else values
    return _parse_scalar(key, text, typ)


def _fields(cfg: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg)}


def set_field(cfg: DataclassT, key: str, text: str) -> DataclassT:
    """Return a copy of dataclass ``cfg`` with dotted ``key`` set from ``text``."""
    head, _, rest = key.partition(".")
    fields = _fields(cfg)
    aliases = getattr(type(cfg), "ALIASES", {})
    if key in aliases and head not in fields:  # one key feeding several fields, or a renamed key
        for target in aliases[key]:
            cfg = set_field(cfg, target, text)
        return cfg
    if head not in fields:
        raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(type(cfg))
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current) or isinstance(current, type):  # a dataclass instance only
            raise ConfigError(f"--set {key}: {head!r} has no sub-keys")
        return dataclasses.replace(cfg, **{head: set_field(current, rest, text)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"--set {key}: {head!r} is a group; set one of its keys ({head}.NAME=VALUE)")
    new = dataclasses.replace(cfg, **{head: parse_value(key, text, hints[head])})
    for linked in getattr(type(cfg), "LINKED", {}).get(head, ()):
        new = set_field(new, linked, text)  # one value feeding several sub-configs: written everywhere
    return new


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_linked(cfg: Any) -> None:
    """Raise a one-line :class:`ConfigError` when a linked sub-config key disagrees with its source.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass
        ... class Sub:
        ...     eps: float = 0.1
        >>> @dataclass
        ... class Run:
        ...     LINKED = {"eps": ("sub.eps",)}
        ...     eps: float = 0.1
        ...     sub: Sub = field(default_factory=Sub)
        >>> check_linked(Run(eps=0.2, sub=Sub(eps=0.2)))  # what apply_overrides(Run(), ["eps=0.2"]) makes
        >>> check_linked(Run(sub=Sub(eps=0.3)))  # what apply_overrides(Run(), ["sub.eps=0.3"]) makes
        Traceback (most recent call last):
        ...
        obstructlib.errors.ConfigError: sub.eps=0.3 differs from eps=0.1: they are one value here; set eps ...
    """
    for source, targets in getattr(type(cfg), "LINKED", {}).items():
        value = _get(cfg, source)
        for target in targets:
            other = _get(cfg, target)
            if other != value:
                raise ConfigError(f"{target}={other} differs from {source}={value}: they are one value here; "
                                  f"set {source} (it writes {', '.join(targets)} too)")


def link(cfg: T) -> T:
    """A copy of ``cfg`` whose linked sub-config keys hold their source's value (for building defaults)."""
    cfg = copy.deepcopy(cfg)
    for source, targets in getattr(type(cfg), "LINKED", {}).items():
        value = _get(cfg, source)
        for target in targets:
            *path, last = target.split(".")
            owner = _get(cfg, ".".join(path)) if path else cfg
            setattr(owner, last, value)
    return cfg


def apply_overrides(cfg: DataclassT, overrides: Sequence[str] | None) -> DataclassT:
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
    cfg = copy.deepcopy(cfg)  # sub-configs of the caller's config are never shared or changed
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
