"""The house rules, read from the source: imports only point down, no method imports another, and
the notebooks use only the public namespaces."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "obstructlib"

# Layer of each top-level part of the package; a module may import only its own layer or lower ones.
LAYERS = {
    "errors": 0, "profiles": 0, "config": 0, "registry": 0,
    "data": 1, "models": 1,
    "engine": 2, "metrics": 2, "plotting": 2,
    "primitives": 3,
    "methods": 4,
    "experiments": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}


def _part(module: str) -> str:
    """``obstructlib.methods.uc.steps`` -> ``methods``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``obstructlib...`` module a file imports (also inside functions), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("obstructlib"):
                found.append((node.lineno, node.module))
                found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names
                             if node.module in ("obstructlib", "obstructlib.methods"))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("obstructlib"))
    return found


def _violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _module_name(path)
        part = _part(here)
        if part == "__init__":  # the package root re-exports lazily (strings, not imports)
            continue
        mine = here.split(".")[2] if part == "methods" and len(here.split(".")) > 2 else None
        for line, target in _imports(path):
            there = _part(target)
            if there not in LAYERS:
                continue
            if LAYERS[there] > LAYERS[part]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({part}) imports {target} ({there}): points up")
            if there == "methods" and part == "methods":
                other = target.split(".")[2] if len(target.split(".")) > 2 else None
                if other and mine and other != mine:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: method {mine} imports method {other}")
    return bad


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_imports_point_down_and_methods_stay_apart():
    assert _violations() == []


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    # A check that cannot fail proves nothing: plant a bad import in a copy of the rules.
    fake = PACKAGE / "primitives" / "_layer_probe.py"
    fake.write_text("from obstructlib.methods.uc import protect\nfrom obstructlib.experiments import run\n")
    try:
        found = _violations()
    finally:
        fake.unlink()
    assert any("_layer_probe.py:1" in v and "points up" in v for v in found)
    assert any("_layer_probe.py:2" in v for v in found)


def test_the_layer_check_catches_one_method_importing_another():
    fake = PACKAGE / "methods" / "ntp" / "_layer_probe.py"
    fake.write_text("from obstructlib.methods.mem.steps import PairState\n")
    try:
        found = _violations()
    finally:
        fake.unlink()
    assert any("method ntp imports method mem" in v for v in found)


# ---- notebooks ---------------------------------------------------------------------------------
PUBLIC = ("obstructlib", "obstructlib.data", "obstructlib.models", "obstructlib.engine", "obstructlib.metrics",
          "obstructlib.plotting", "obstructlib.methods.uc", "obstructlib.methods.mem", "obstructlib.methods.ntp")


def _notebook_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    cells = json.loads(path.read_text())["cells"]
    out = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("obstructlib"):
                out.append((i, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                out.extend((i, a.name, []) for a in node.names if a.name.startswith("obstructlib"))
    return out


def _public(module: str, names: list[str]) -> bool:
    if module.startswith("obstructlib.primitives."):  # shared building blocks: public modules
        ok = not module.rsplit(".", 1)[-1].startswith("_")
    else:
        ok = module in PUBLIC
    return ok and not any(n.startswith("_") for n in names)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_use_only_public_namespaces(path):
    bad = [f"cell {i}: from {m} import {', '.join(n)}" for i, m, n in _notebook_imports(path) if not _public(m, n)]
    assert bad == [], f"{path.name} imports runner internals or private names: {bad}"


def test_the_notebook_check_refuses_runner_internals():
    assert not _public("obstructlib.experiments.uc", ["UCRunConfig"])
    assert not _public("obstructlib.methods.mem.steps", ["PairState"])
    assert not _public("obstructlib.data", ["_private"])
    assert _public("obstructlib.methods.mem", ["PairState"])
    assert _public("obstructlib.primitives.pruning", ["init_masks"])


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmark_scripts_import_names_that_exist(path):
    """The benchmark scripts are not run by the tests; their obstructlib imports must still resolve."""
    import importlib

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("obstructlib"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{path.name}:{node.lineno} imports {missing} from {node.module}, which has none"
