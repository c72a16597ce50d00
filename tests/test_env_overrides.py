"""$OBSTRUCT_SET: one environment override that reaches every config of a runner (notebooks, ob.run, CLI)."""

from __future__ import annotations

import json

import pytest

import obstructlib as ob
from obstructlib.errors import ConfigError


def test_applies_before_the_calls_own_overrides(monkeypatch):
    monkeypatch.setenv("OBSTRUCT_SET", json.dumps({"clip": ["train.steps=7", "max_test_samples=9"]}))
    cfg = ob.config_for("clip", "quick")
    assert cfg.train.steps == 7 and cfg.max_test_samples == 9
    assert ob.config_for("clip", "quick", ["train.steps=3"]).train.steps == 3  # the call wins
    assert ob.config_for("uc", "quick") == ob.config_for("uc", "quick", [])  # other runners untouched


def test_reaches_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("OBSTRUCT_SET", json.dumps({"clip": ["train.steps=2", "max_train_samples=32",
                                                           "max_test_samples=16", "train.batch_size=16"]}))
    results = ob.run("clip", profile="quick", out=tmp_path / "run", progress=False)
    assert results["config"]["train"]["steps"] == 2 and results["config"]["max_train_samples"] == 32


@pytest.mark.parametrize(("value", "words"), [
    ("{not json", "is not JSON"),
    ('["train.steps=2"]', "must map runner names"),
    ('{"clip": "train.steps=2"}', "must map runner names"),
    ('{"nope": []}', "unknown runners ['nope']"),
    ('{"clip": ["train.nope=1"]}', "nope"),
])
def test_bad_values_are_one_line(monkeypatch, cli_fails, value, words):
    monkeypatch.setenv("OBSTRUCT_SET", value)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ob.config_for("clip", "quick")
    cli_fails(["clip", "--out", "/nonexistent/never"], words)
