"""One runner per paper: protect -> attack/evaluate -> results dict.

Each runner registers itself with :func:`register_runner`; the CLI builds one subcommand per
runner from its :class:`Runner` record, so adding a paper adds no CLI code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
        registries: config field -> the registry its values come from (``method`` ->
            protections), listed by ``obstruct NAME --FIELD help`` and read by the scorecard.
        resolve: ``resolve(cfg, seed) -> cfg``, the config as it runs (the run's seed written into
            the sub-configs that take it); what ``results.json`` records.
        adapt: ``adapt(cfg, profile, explicit) -> cfg`` after the flags and ``--set`` values are
            applied: defaults that follow another value (e.g. a profile row per dataset), keeping
            every dotted key in ``explicit`` (what the user set) as it is.
    """

    name: str
    help: str
    config_for: Callable[[Profile], Any]
    run: Callable[[Any, RunContext], dict[str, Any]]
    flags: tuple[Flag, ...] = field(default_factory=tuple)
    registries: dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[Any, int], Any] | None = None
    adapt: Callable[[Any, Profile, set[str]], Any] | None = None


def explicit_keys(overrides: Sequence[str] | None, flags: dict[str, str] | None = None) -> set[str]:
    """The dotted keys a user set: ``--set KEY=VALUE`` keys and the fields of the flags given."""
    keys = {o.split("=", 1)[0].strip() for o in (overrides or ()) if "=" in o}
    return keys | set(flags or {})


SET_ENV = "OBSTRUCT_SET"


def env_overrides(name: str) -> list[str]:
    """The ``--set`` overrides ``$OBSTRUCT_SET`` gives runner ``name``: one environment override for every run.

    ``OBSTRUCT_SET`` holds a JSON object from runner name to a list of ``key=value`` strings, e.g.
    ``{"clip": ["train.steps=5", "arch=tiny-vit", "pretrained=/ckpt/tiny.safetensors"]}``. They apply
    to every config of that runner, in notebooks (``config_for``), ``ob.run`` and the CLI, before the
    call's own overrides (which win). It shrinks a ``colab`` run into a smoke test on a CPU (the
    tests' colab path) or fixes a site-wide setting; ``results.json`` records the resolved config.

    Example:
        >>> import os; os.environ["OBSTRUCT_SET"] = '{"clip": ["train.steps=5"]}'
        >>> env_overrides("clip"), env_overrides("uc")
        (['train.steps=5'], [])
        >>> del os.environ["OBSTRUCT_SET"]
    """
    import json
    import os

    from obstructlib.errors import ConfigError

    text = os.environ.get(SET_ENV, "").strip()
    if not text:
        return []
    try:
        table = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"${SET_ENV} is not JSON ({err.msg} at character {err.pos}): "
                          'give an object such as {"clip": ["train.steps=5"]}, or unset it') from None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in table.values()):
        raise ConfigError(f'${SET_ENV} must map runner names to lists of "key=value" strings, '
                          'e.g. {"clip": ["train.steps=5"]}')
    unknown = sorted(set(table) - set(load_runners()))
    if unknown:
        raise ConfigError(f"${SET_ENV} names unknown runners {unknown}: use {', '.join(sorted(load_runners()))}")
    return list(table.get(name, []))


RUNNERS: dict[str, Runner] = {}


def register_runner(runner: Runner) -> Runner:
    """Add a runner to the CLI."""
    RUNNERS[runner.name] = runner
    return runner


def load_runners() -> dict[str, Runner]:
    """Import the runner modules (they register themselves) and return the registry."""
    from obstructlib.experiments import (
        clip_baseline,  # noqa: F401
        lto,  # noqa: F401
        mem,  # noqa: F401
        ntp,  # noqa: F401
        ubt,  # noqa: F401
        uc,  # noqa: F401
    )

    return RUNNERS


def config_for(name: str, profile: str | Profile | None = None, overrides: Sequence[str] = ()) -> Any:
    """The resolved config a runner would run with: its profile table plus ``--set`` overrides.

    Args:
        name: the runner (``clip``, ``uc``, ``mem``, ``ntp``).
        profile: a profile or its name (default: ``$OBSTRUCT_PROFILE``, else by device).
        overrides: ``key=value`` strings, as ``--set`` takes them (after those of ``$OBSTRUCT_SET``,
            :func:`env_overrides`).

    Example:
        >>> config_for("uc", "quick", ["eps=8/255"]).eps
        0.03137254901960784
    """
    from obstructlib.config import apply_overrides
    from obstructlib.errors import ConfigError
    from obstructlib.profiles import resolve_profile

    runners = load_runners()
    if name not in runners:
        raise ConfigError(f"unknown runner {name!r}: use one of {', '.join(sorted(runners))}")
    prof = profile if isinstance(profile, Profile) else resolve_profile(profile)
    runner = runners[name]
    overrides = [*env_overrides(name), *overrides]
    cfg = apply_overrides(runner.config_for(prof), overrides)
    return cfg if runner.adapt is None else runner.adapt(cfg, prof, explicit_keys(overrides))


def run(name: str, *, profile: str | None = None, overrides: Sequence[str] = (), seed: int = 0,
        device: str | None = None, data_root: str | Path | None = None, out: str | Path | None = None,
        progress: bool = True, restart: bool = False) -> dict[str, Any]:
    """Run a runner in process, exactly as ``obstruct NAME`` does, and return its ``results.json`` dict.

    Args:
        name: the runner (``clip``, ``uc``, ``mem``, ``ntp``).
        profile: ``quick``, ``colab`` or ``paper`` (default as the CLI's).
        overrides: ``key=value`` strings (``--set``).
        seed: the run's seed (``--seed``).
        device: ``cpu``, ``cuda`` ... (default: CUDA when available).
        data_root: root of registered datasets (default ``$OBSTRUCT_DATA`` or ``./data``).
        out: run folder (``results.json``, checkpoints); a rerun resumes; None: ``runs/NAME``.
        progress: progress bars.
        restart: discard the folder's checkpoints and start over (default: resume them, and refuse
            those of another config).

    Raises:
        ObstructError: bad input (one line saying what to do); nothing half-written is left.

    Example:
        >>> res = run("uc", overrides=["train.epochs=1"], out="runs/uc-try")  # doctest: +SKIP
        >>> res["metrics"]["protected"]["test_acc"]                           # doctest: +SKIP
    """
    from obstructlib.experiments.common import execute

    return execute(name, profile=profile, overrides=overrides, seed=seed, device=device, data_root=data_root,
                   out=out, progress=progress, restart=restart, argv=None)


__all__ = [
    "RUNNERS",
    "Flag",
    "RunContext",
    "Runner",
    "config_for",
    "load_runners",
    "register_runner",
    "run",
    "versions",
    "write_json_atomic",
]
