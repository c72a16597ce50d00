"""Configs do what they say: no value overwritten behind the user's back, results.json records what
ran, one fingerprint check for every resumable folder, profiles as tables, registries listed."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import obstructlib as ob
from obstructlib.cli import main
from obstructlib.config import apply_overrides
from obstructlib.engine import check_fingerprint
from obstructlib.errors import ConfigError
from obstructlib.experiments import RUNNERS, load_runners

ROOT = Path(__file__).resolve().parents[1]


def test_one_budget_is_written_everywhere_and_a_disagreeing_sub_budget_is_refused():
    uc = ob.config_for("uc", "quick", ["eps=8/255"])
    assert uc.eps == uc.uc.eps == uc.em.eps == uc.tap.eps == pytest.approx(8 / 255)
    with pytest.raises(ConfigError, match=r"uc\.eps=.* differs from eps="):  # once silently overwritten
        ob.config_for("uc", "quick", ["uc.eps=4/255"])
    mem = ob.config_for("mem", "quick", ["trigger_tokens=5"])
    assert mem.mem.trigger_tokens == 5
    with pytest.raises(ConfigError, match=r"mem\.trigger_tokens=5 differs"):
        ob.config_for("mem", "quick", ["mem.trigger_tokens=5"])
    with pytest.raises(ConfigError, match="em.trigger_tokens"):
        ob.config_for("mem", "quick", ["em.trigger_tokens=2"])


def test_surrogate_is_one_value():
    cfg = ob.config_for("uc", "quick", ["surrogate=classifier:resnet20"])
    assert cfg.surrogate == cfg.uc.surrogate == "classifier:resnet20"


def test_overriding_a_copy_never_changes_the_base():
    base = ob.config_for("uc", "quick")
    before = dataclasses.asdict(base)
    changed = apply_overrides(base, ["eps=4/255", "train.lr=0.5", "uc.num_clusters=3"])
    assert dataclasses.asdict(base) == before
    assert changed.uc is not base.uc and changed.train is not base.train
    assert changed.train.lr == 0.5 and base.train.lr != 0.5


def test_validate_changes_nothing():
    for name in ("clip", "uc", "mem", "ntp"):
        cfg = ob.config_for(name, "quick")
        before = dataclasses.asdict(cfg)
        cfg.validate()
        assert dataclasses.asdict(cfg) == before, name


def _seed_fields(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _seed_fields(value, f"{prefix}{key}.")
        elif key == "seed":
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name,extra,hacker_base", [
    ("uc", [], 5), ("uc", ["hacker_seed=3"], 3),
    ("mem", [], 5), ("mem", ["hacker_seed=3"], 3),
    ("ntp", [], None),
])
def test_results_record_the_seeds_that_ran(tmp_path, monkeypatch, name, extra, hacker_base):
    from obstructlib.experiments.common import derive_seed

    load_runners()
    seen = {}

    def fake_run(cfg, ctx):  # what the runner receives is what results.json records
        seen["cfg"] = cfg
        return {}

    monkeypatch.setitem(RUNNERS, name, dataclasses.replace(RUNNERS[name], run=fake_run))
    res = ob.run(name, profile="quick", seed=5, overrides=extra, out=tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["config"] == res["config"] == json.loads(json.dumps(dataclasses.asdict(seen["cfg"])))
    seeds = dict(_seed_fields(written["config"]))
    protector_parts = ("uc", "em", "tap", "mem", "ntp", "ntl", "simclr")
    protector = {k: v for k, v in seeds.items() if k.split(".")[0] in protector_parts}
    assert protector and all(v == 5 for v in protector.values()), protector
    if hacker_base is not None:  # the first hacker's stream, never the protector's
        assert seeds["train.seed"] == derive_seed(hacker_base, "hacker", 0) not in protector.values()
    else:
        assert seeds.get("train.seed", 0) == 0  # the recipe as given: recorded as it ran


def test_fingerprint_names_the_keys_and_restart_starts_over(tmp_path):
    folder = tmp_path / "ck"
    cfg = ob.config_for("uc", "quick")
    check_fingerprint(folder, cfg)
    (folder / "stale.pt").write_text("x")
    check_fingerprint(folder, apply_overrides(cfg, ["train.num_workers=0"]))  # execution-only keys do not count
    other = apply_overrides(cfg, ["train.lr=0.5", "uc.epochs=1"])
    with pytest.raises(ConfigError, match=r"train\.lr=0\.1 \(now 0\.5\).*uc\.epochs=3 \(now 1\).*--restart"):
        check_fingerprint(folder, other)
    check_fingerprint(folder, other, restart=True)
    assert not (folder / "stale.pt").exists()
    check_fingerprint(folder, other)  # the new config is now the folder's


def test_cli_restart_flag(tmp_path, cli_fails, capsys):
    tiny = ["--no-progress", "--set", "max_train_samples=40", "--set", "max_test_samples=20",
            "--set", "train.epochs=1", "--set", "train.batch_size=20", "--method", "random"]
    out = tmp_path / "run"
    assert main(["uc", "--out", str(out), *tiny]) == 0
    cli_fails(["uc", "--out", str(out), *tiny, "--set", "train.lr=0.05"], "train.lr")
    assert main(["uc", "--out", str(out), *tiny, "--set", "train.lr=0.05", "--restart"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["train"]["lr"] == 0.05


def test_no_profile_branches_outside_the_profile_tables():
    offenders = []
    for path in (ROOT / "obstructlib").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"profile\.name\s*[=!]=", line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert offenders == []
    methods = (ROOT / "obstructlib" / "methods")
    assert not [p for p in methods.rglob("*.py") if "profiles" in p.read_text()], "methods know nothing of profiles"


def test_registries_are_listed_and_documented(capsys):
    assert main(["uc", "--method", "help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("uc", "uc-clip", "em-sample", "em-class", "tap", "random"))
    for runner in load_runners().values():
        for registry in runner.registries.values():
            assert len(registry) and all(registry.describe().values())


def test_renamed_keys_keep_working():
    from obstructlib.config import set_field

    @dataclasses.dataclass
    class C:
        ALIASES = {"old_name": ("new_name",)}
        new_name: int = 1

    assert set_field(C(), "old_name", "3").new_name == 3


def test_non_finite_numbers_are_refused():
    with pytest.raises(ConfigError, match="finite"):
        ob.config_for("ntp", "quick", ["ntp.lr=nan"])
