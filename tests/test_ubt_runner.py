"""``obstruct ubt`` end to end on tiny embedded data, and its bad inputs."""

from __future__ import annotations

import json

import pytest

from obstructlib.experiments.common import execute

TINY = ["pretrain_samples=300", "train_samples=200", "heldout_samples=60", "test_samples=100", "pretrain.steps=20",
        "victim.steps=20", "victim.batch_size=32", "pretrain.batch_size=32", "ubt.overfit.epochs=1",
        "ubt.unlearn.epochs=1", "ubt.unlearn_fraction=0.05", "ubt.pool_fraction=0.2", "min_asr=0",
        "attack.poison_rate=0.1"]


@pytest.mark.slow
def test_ubt_runner_end_to_end_writes_the_contract_metrics(tmp_path, one_thread):
    out = tmp_path / "run"
    execute("ubt", profile="quick", overrides=[*TINY, "ubt.check=false"], seed=0, device="cpu", data_root=tmp_path,
            out=out, progress=False, restart=False, argv=None,
            flags={"dataset": "synthetic", "attack.attack": "sig", "defense": "ubt,none"})
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert {"ca", "asr", "kl"} <= set(m["poisoned"]) and {"ca", "asr"} <= set(m["clean"])
    assert {"pool_recall", "pool_precision", "unlearn_precision"} <= set(m["detection"])
    assert m["refused"] is False and set(m["defenses"]) == {"ubt", "none"}
    assert m["defenses"]["none"]["asr"] == m["poisoned"]["asr"]
    assert m["defenses"]["ubt"]["kl"] != m["poisoned"]["kl"]  # the defence changed the model
    assert m["attack"]["num_poisons"] == 20


def test_ubt_runner_refuses_a_model_without_backdoor(tmp_path, one_thread):
    out = tmp_path / "run"
    sets = [s for s in TINY if not s.startswith("min_asr")] + ["min_asr=100"]
    execute("ubt", profile="quick", overrides=sets, seed=0, device="cpu", data_root=tmp_path, out=out,
            progress=False, restart=False, argv=None, flags={"dataset": "synthetic", "attack.attack": "sig"})
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert m["refused"] is True and "min_asr" in m["refusal_reason"] and m["defenses"] == {}


@pytest.mark.parametrize(("argv", "words"), [
    (["--attack", "nope"], "attack"),
    (["--poison-rate", "1.5"], "poison_rate"),
    (["--defense", "magic"], "defense"),
    (["--target", "banana", "--set", "attack.add_target_class=false", "--dataset", "synthetic"], "not a class"),
])
def test_ubt_bad_inputs_fail_with_one_line(cli_fails, tmp_path, argv, words):
    cli_fails(["ubt", "--out", str(tmp_path / "r"), "--data-root", str(tmp_path), *TINY_SET(), *argv], words)


def TINY_SET() -> list[str]:  # noqa: N802 - reads like the constant it expands
    return [a for s in TINY if not s.startswith("attack.") for a in ("--set", s)]


def test_attacker_victim_and_defender_streams_are_independent():
    import dataclasses

    from test_config_resolution import _seed_fields

    import obstructlib as ob
    from obstructlib.experiments import RUNNERS, load_runners

    load_runners()
    for seed in (0, 1, 7):
        cfg = RUNNERS["ubt"].resolve(ob.config_for("ubt", "quick"), seed)
        seeds = dict(_seed_fields(dataclasses.asdict(cfg)))
        defenders = {v for k, v in seeds.items() if k.split(".")[0] in ("ubt", "ft", "cleanclip", "roclip", "abl")}
        assert defenders == {seed + 10, seed + 11}
        # UBT's own stages use the defender's seed and the next one; none is the attacker's or victim's
        used = {cfg.attack.seed, cfg.victim.seed, cfg.pretrain.seed}
        assert len(used) == 3 and used.isdisjoint({seed + 10, seed + 11})
        assert set(seeds.values()) <= used | defenders, seeds
    other = RUNNERS["ubt"].resolve(ob.config_for("ubt", "quick"), 1)
    assert other.attack.seed != cfg.attack.seed  # another seed is another, independent attacker


def test_quick_recipe_follows_the_dataset_and_keeps_what_the_user_set():
    import obstructlib as ob

    embedded = ob.config_for("ubt", "quick")
    assert embedded.recipe == "quick-embedded" and embedded.dataset == "synthetic" and embedded.train_samples == 800
    assert embedded.ubt.pool_scorer == "poisoned"
    real = ob.config_for("ubt", "quick", ["dataset=folder:/data/cifar10-jpeg", "victim.steps=1234",
                                          "attack.poison_rate=0.1", "ubt.pool_scorer=poisoned"])
    assert real.recipe == "quick-real" and real.dataset == "folder:/data/cifar10-jpeg"
    assert real.train_samples == 5000 and real.victim.lr == 5e-4 and real.ubt.pool_direction == "lowest"
    # what the user set wins, even where it equals the embedded row's default (pool_scorer)
    assert real.victim.steps == 1234 and real.attack.poison_rate == 0.1 and real.ubt.pool_scorer == "poisoned"
    assert ob.config_for("ubt", "quick", ["dataset=folder:/d"]).ubt.pool_scorer == "clean"


def test_the_cli_path_adapts_too(tmp_path, monkeypatch):
    import dataclasses

    from obstructlib.experiments import RUNNERS, load_runners

    load_runners()
    seen = {}
    monkeypatch.setitem(RUNNERS, "ubt", dataclasses.replace(RUNNERS["ubt"], run=lambda cfg, ctx: seen.update(cfg=cfg)
                                                            or {}))
    execute("ubt", profile="quick", overrides=["victim.steps=7"], seed=3, device="cpu", data_root=tmp_path,
            out=tmp_path / "r", progress=False, restart=False, argv=None,
            flags={"dataset": "folder:/data/cifar10-jpeg", "attack.attack": "sig"})
    cfg = seen["cfg"]
    assert cfg.recipe == "quick-real" and cfg.victim.steps == 7 and cfg.victim.seed == 4 and cfg.attack.attack == "sig"
