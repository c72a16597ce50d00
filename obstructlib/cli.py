"""The ``obstruct`` command (also ``python -m obstructlib``).

Subcommands: ``info``, ``data fetch NAME`` / ``data list`` and one per registered runner.
Common options of the runners: ``--profile``,
``--data-root``, ``--out``, ``--seed``, ``--device`` and repeatable ``--set key=value``.
A run writes ``OUT/results.json`` and exits 0; re-running with the same ``--out`` resumes from
the last checkpoint. Bad input exits 2 with one line on stderr and leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obstructlib.errors import ObstructError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``obstruct: error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=("quick", "colab", "paper"), default=None,
                        help="run scale (default: $OBSTRUCT_PROFILE, else quick on CPU, colab on CUDA)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="root of registered datasets (default: $OBSTRUCT_DATA or ./data)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one subcommand per registered runner."""
    from obstructlib.experiments import load_runners

    parser = _Parser(prog="obstruct", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    info = sub.add_parser("info", help="versions, device, profile, data root and which datasets are present")
    _common(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    data = sub.add_parser("data", help="fetch the real datasets: `obstruct data list`, `obstruct data fetch NAME`",
                          description="obstruct data list | obstruct data fetch NAME [--root DIR] [NAME's options]"
                          " (`obstruct data fetch NAME --help` lists them)")
    data.add_argument("action", choices=("fetch", "list"))
    data.add_argument("rest", nargs=argparse.REMAINDER, help="NAME and its options (fetch)")
    for runner in load_runners().values():
        p = sub.add_parser(runner.name, help=runner.help, description=runner.help)
        _common(p)
        p.add_argument("--out", type=str, default=None,
                       help="run folder for results.json and checkpoints (default: $OBSTRUCT_RUNS/COMMAND, else "
                       "MyDrive/obstructlib/runs/COMMAND where Google Drive is mounted, else runs/COMMAND)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config field (dotted keys for nested fields); repeatable")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--restart", action="store_true",
                       help="start over: discard the checkpoints in --out "
                       "(default: resume them; refuse those of another config)")
        for flag in runner.flags:
            p.add_argument(flag.flag, dest=f"flag_{flag.field}", default=None, choices=flag.choices,
                           help=flag.help)
    return parser


def info(args: argparse.Namespace) -> dict[str, Any]:
    """What ``obstruct info`` reports, as a dict."""
    from obstructlib.data import default_data_root, list_datasets
    from obstructlib.engine import resolve_device
    from obstructlib.experiments.common import describe_device, versions
    from obstructlib.profiles import resolve_profile

    device = resolve_device(args.device)
    profile = resolve_profile(args.profile)
    root = Path(args.data_root) if args.data_root else default_data_root()
    datasets = {}
    for name, ds in list_datasets().items():
        present = ds.embedded or (root / ds.subdir).exists()
        path = "embedded" if ds.embedded else str(root / ds.subdir)
        datasets[name] = {"kind": ds.kind, "present": present, "path": path,
                          "fetch": "" if present else ds.fetch.format(root=root)}
    return {"versions": versions(), "device": describe_device(device), "profile": profile.name,
            "profile_description": profile.description, "data_root": str(root.resolve()), "datasets": datasets}


def _print_info(report: dict[str, Any]) -> None:
    print("obstructlib " + report["versions"].get("obstructlib", "?"))
    print("versions:   " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "obstructlib"))
    dev = report["device"]
    print(f"device:     {dev['type']} ({dev.get('name', '')})")
    print(f"profile:    {report['profile']} - {report['profile_description']}")
    print(f"data root:  {report['data_root']}")
    print("datasets:")
    for name, d in report["datasets"].items():
        state = "present" if d["present"] else f"missing  -> {d['fetch']}"
        print(f"  {name:<20} {d['kind']:<15} {state}")


def run_command(args: argparse.Namespace) -> Path:
    """Resolve config, run the runner, write ``results.json``; returns its path."""
    from obstructlib.experiments.common import execute

    flags = {k.removeprefix("flag_"): v for k, v in vars(args).items() if k.startswith("flag_") and v is not None}
    execute(args.command, profile=args.profile, overrides=args.overrides, seed=args.seed, device=args.device,
            data_root=args.data_root, out=args.out, progress=not args.no_progress, restart=args.restart,
            argv=["obstruct", *args.argv], flags=flags)
    from obstructlib.data import default_runs_root

    return (Path(args.out) if args.out is not None else default_runs_root() / args.command) / "results.json"


def data_command(action: str, rest: Sequence[str]) -> int:
    """``obstruct data list`` and ``obstruct data fetch NAME [--root DIR] [options]``: the exit status.

    Fetch exits 0 when the dataset is in place, 1 when a download failed (a partial file is kept
    and a rerun resumes), 2 on a bad name or option, 3 when a step by hand is needed (it says which).
    """
    from obstructlib.data.fetchers import AUTOMATIC, FETCHERS, default_root, fetch_main

    if action == "list":
        print(f"data root: {default_root()}  ($OBSTRUCT_DATA, else <repo>/data in a checkout, else ./data)")
        for name, what in FETCHERS.items():
            auto = "auto" if name in AUTOMATIC else "    "
            print(f"  {name:<15} {auto}  {what}")
        print("auto: a loader fetches it on first use (set OBSTRUCT_DOWNLOAD=0 to forbid); "
              "the others: obstruct data fetch NAME")
        return 0
    if not rest or rest[0].startswith("-"):
        print("obstruct data fetch: error: name a dataset: obstruct data fetch NAME "
              f"(one of {', '.join(FETCHERS)})", file=sys.stderr)
        return EXIT_BAD_INPUT
    name, *args = rest
    return fetch_main(name, args)  # an unknown name: ConfigError, one line and exit 2 from main


def _print_registered(command: str, field: str) -> bool:
    """``obstruct uc --method help``: print what the runner's registry for ``field`` holds."""
    from obstructlib.experiments import RUNNERS

    registry = RUNNERS[command].registries.get(field)
    if registry is None:
        return False
    print(f"obstruct {command}: registered values of {field}")
    for name, doc in registry.describe().items():
        print(f"  {name:<16} {doc}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "data":
            if args.action == "list" and args.rest:
                parser.error(f"obstruct data list takes no arguments, got {' '.join(args.rest)}")
            return data_command(args.action, args.rest)
        if args.command == "info":
            report = info(args)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_info(report)
            return 0
        helps = [f for f, v in vars(args).items() if f.startswith("flag_") and v == "help"]
        if helps and _print_registered(args.command, helps[0].removeprefix("flag_")):
            return 0
        path = run_command(args)
        print(f"results: {path}")
        return 0
    except ObstructError as err:
        print(f"obstruct: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("obstruct: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
