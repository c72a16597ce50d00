"""One runner per paper: protect -> attack/evaluate -> results dict.

Each runner registers itself with :func:`register_runner`; the CLI builds one subcommand per
runner from its :class:`Runner` record, so adding a paper adds no CLI code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from obstructlib.experiments.common import RunContext, versions, write_json_atomic
from obstructlib.profiles import Profile


@dataclass(frozen=True)
class Flag:
    """A subcommand option that sets one config field (``--dataset`` -> ``dataset``)."""

    flag: str
    field: str
    help: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Runner:
    """A registered experiment.

    Attributes:
        name: the subcommand (``clip``, ``uc``, ...).
        help: one line for ``obstruct --help``.
        config_for: builds the default config for a profile.
        run: ``run(cfg, ctx) -> metrics``; writes nothing itself but checkpoints.
        flags: options mapped onto config fields.
    """

    name: str
    help: str
    config_for: Callable[[Profile], Any]
    run: Callable[[Any, RunContext], dict[str, Any]]
    flags: tuple[Flag, ...] = field(default_factory=tuple)


RUNNERS: dict[str, Runner] = {}


def register_runner(runner: Runner) -> Runner:
    """Add a runner to the CLI."""
    RUNNERS[runner.name] = runner
    return runner


def load_runners() -> dict[str, Runner]:
    """Import the runner modules (they register themselves) and return the registry."""
    from obstructlib.experiments import (
        clip_baseline,  # noqa: F401
        mem,  # noqa: F401
        ntp,  # noqa: F401
        uc,  # noqa: F401
    )

    return RUNNERS


__all__ = [
    "RUNNERS",
    "Flag",
    "RunContext",
    "Runner",
    "load_runners",
    "register_runner",
    "versions",
    "write_json_atomic",
]
