"""``make docs`` (docs/build.py): a notebook executed and rendered to HTML with its figures, and an index."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_renders_a_notebook_with_its_figure_and_an_index(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · A tiny page\n\nText."),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nprint('ran here')"),
    ])
    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(nb, path)
    assert _build().main([str(path), "--out", str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "99_tiny.html").read_text()
    assert "ran here" in page and "data:image/png;base64" in page  # executed, and the figure is in the page
    index = (tmp_path / "html" / "index.html").read_text()
    assert 'href="99_tiny.html"' in index and "99 · A tiny page" in index


def test_a_missing_notebook_is_one_line(tmp_path, capsys):
    assert _build().main([str(tmp_path / "nope.ipynb"), "--out", str(tmp_path)]) == 2
    assert "no such notebook" in capsys.readouterr().err
