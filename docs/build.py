"""``make docs``: execute the course notebooks in the ``quick`` profile and render them to HTML.

The result is a static site a reader opens without running anything: ``docs/_build/html/index.html``
links one page per notebook, each with every figure and table of its run. The notebooks run in
their own folder (as under ``make lab``), offline, in the ``quick`` profile; a notebook that fails
stops the build with its name and the error (the pages already written stay).

Usage:
    python docs/build.py [--out DIR] [NOTEBOOK ...]     # default: every notebooks/0*.ipynb
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "_build" / "html"
# offline, quick, no download on first use; progress bars redraw rarely (nbconvert keeps every redraw)
ENV = {"OBSTRUCT_PROFILE": "quick", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OBSTRUCT_DOWNLOAD": "0",
       "TQDM_MININTERVAL": "30", "PYTHONHASHSEED": "0"}


def title_of(notebook: Path) -> str:
    """The first Markdown heading of a notebook (its file name if it has none)."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def render(notebook: Path, out: Path, timeout_s: int) -> float:
    """Execute ``notebook`` in its folder and write ``out/<stem>.html``; returns the seconds it took."""
    env = {**os.environ, **ENV}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws every figure into the page
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
                    f"--ExecutePreprocessor.timeout={timeout_s}", "--output-dir", str(out), str(notebook)],
                   check=True, env=env, cwd=notebook.parent)
    return time.perf_counter() - start


def write_index(out: Path, pages: list[tuple[Path, str, float]]) -> Path:
    rows = "\n".join(f'<li><a href="{html.escape(nb.stem)}.html">{html.escape(title)}</a> '
                     f"<small>(executed in the quick profile in {seconds:.0f} s)</small></li>"
                     for nb, title, seconds in pages)
    index = out / "index.html"
    index.write_text("<!doctype html>\n<meta charset=\"utf-8\">\n<title>obstructlib course</title>\n"
                     "<h1>obstructlib: the course, executed</h1>\n"
                     f"<p>Built {time.strftime('%Y-%m-%d')} by <code>make docs</code>: every notebook run top to "
                     "bottom in the <code>quick</code> profile (CPU, offline data).</p>\n"
                     f"<ol>\n{rows}\n</ol>\n")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to render (default: every course notebook)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        print(f"docs: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    pages = []
    for notebook in notebooks:
        print(f"docs: executing {notebook.name} ...", flush=True)
        try:
            seconds = render(notebook, args.out, args.timeout)
        except subprocess.CalledProcessError:
            print(f"docs: {notebook.name} failed (its error is above); pages so far are in {args.out}", file=sys.stderr)
            return 1
        pages.append((notebook, title_of(notebook), seconds))
    print(f"docs: {write_index(args.out, pages)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
