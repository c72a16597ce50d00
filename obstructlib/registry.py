"""Registries: name -> callable with a docstring, for methods, baselines and countermeasures.

Runners dispatch by lookup (``PROTECTIONS.get(cfg.method)(...)``) instead of ``if``/``elif``
chains, the CLI lists a registry (``obstruct uc --method help``) and the scorecard reads them.

Example:
    >>> reg = Registry("protection")
    >>> @reg.register("random")
    ... def random_noise(x):
    ...     '''Uniform noise in the eps-ball.'''
    ...     return x
    >>> reg.names(), reg.describe()["random"]
    (('random',), 'Uniform noise in the eps-ball.')
    >>> reg.get("nope")
    Traceback (most recent call last):
    ...
    obstructlib.errors.ConfigError: unknown protection 'nope'; use one of random
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from obstructlib.errors import ConfigError

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """An ordered ``name -> callable`` table; every entry must carry a docstring.

    Args:
        kind: what the entries are (``"protection"``, ``"countermeasure"``), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator adding ``fn`` under ``name`` (a duplicate name or a missing docstring is an error)."""

        def add(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if not (fn.__doc__ or "").strip():
                raise ValueError(f"{self.kind} {name!r} needs a docstring (its first line is shown to users)")
            self._entries[name] = fn
            return fn

        return add

    def get(self, name: str, key: str | None = None) -> F:
        """The entry ``name``; a one-line :class:`ConfigError` listing the names otherwise.

        Args:
            name: the registered name.
            key: the config field the name came from, named in the message (``method``).
        """
        if name not in self._entries:
            where = f"{key}={name!r}: unknown {self.kind}" if key else f"unknown {self.kind} {name!r}"
            raise ConfigError(f"{where}; use one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def describe(self) -> dict[str, str]:
        """``name -> first line of its docstring``."""
        return {n: (fn.__doc__ or "").strip().splitlines()[0] for n, fn in self._entries.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
