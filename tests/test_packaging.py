"""The set-up contract: README commands, CI entry, dependency lists, notebook hygiene."""

import json
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; 3.10 users run the rest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    meta = _pyproject()["project"]
    wanted = set(meta["dependencies"]) | set(meta["optional-dependencies"]["notebook"]) | set(
        meta["optional-dependencies"]["dev"])
    listed = set()
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"^\s+- (.+?)\s*$", line)
        if in_pip and m and not m.group(1).startswith("-e"):
            listed.add(m.group(1))
    assert {_norm(r) for r in wanted} == {_norm(r) for r in listed}


def test_dependencies_have_lower_bounds_only():
    meta = _pyproject()["project"]
    reqs = meta["dependencies"] + sum(meta["optional-dependencies"].values(), [])
    for req in reqs:
        assert ">=" in req and "==" not in req and "<" not in req.replace("<=", ""), req


def test_readme_gives_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)
    assert "HF_HUB_OFFLINE=1" in makefile and "--nbval" in makefile


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "commit notebooks without outputs"
    sources = ["".join(c["source"]) for c in cells]
    assert "colab.research.google.com" in sources[0], "title cell needs a Colab badge"
    install = next(s for s in sources if "pip" in s and "install" in s)
    install_code = "\n".join(line for line in install.splitlines() if not line.lstrip().startswith("#"))
    assert 'find_spec("obstructlib") is None' in install_code and "torch" not in install_code, (
        "the install cell installs obstructlib (never torch), in any kernel that lacks it")
    release = re.search(r'^OBSTRUCTLIB_RELEASE = "([^"]+)"', install_code, re.MULTILINE)
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert release and version and release.group(1) == version.group(1), (
        "the install cell pins the package's own version (bump both together)")
    assert "@v{OBSTRUCTLIB_RELEASE}" in install_code  # the pinned release first (the default branch if unpublished)
    params = next(s for s in sources if s.startswith("# Parameters"))
    for name in ("PROFILE", "SEED", "DEVICE", "DATA_ROOT"):
        assert re.search(rf"^{name}\s*=", params, re.MULTILINE), name
    assert "## Exercises" in sources[-1] or any("## Exercises" in s for s in sources)
