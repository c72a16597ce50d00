"""``obstruct lto`` end to end on the embedded set, its streams and its bad inputs."""

from __future__ import annotations

import dataclasses
import json

import pytest

import obstructlib as ob
from obstructlib.cli import main
from obstructlib.experiments import RUNNERS, load_runners

TINY = ["--no-progress", "--set", "pretrain_samples=300", "--set", "pretrain.steps=15",
        "--set", "pretrain.batch_size=32", "--set", "test_samples=100", "--set", "lto.steps=2",
        "--set", "lto.eval_every=1", "--set", "templates=2", "--set", "attack.epochs=1"]


def test_runner_end_to_end_every_method(tmp_path):
    out = tmp_path / "run"
    assert main(["lto", "--out", str(out), "--method", "all", "--restricted", "round-shapes;0,3", *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    m = res["metrics"]
    assert {"acc_r0", "acc_o0", "trajectory", "drop_ratio_at_2", "drop_ratio_at_2_nearest",
            "mean_drop_ratio_at_2"} <= set(m)
    assert set(m["superclasses"]) == {"round-shapes", "0,3"}
    sc = m["superclasses"]["round-shapes"]
    assert sc["restricted"] == [0, 1, 2]
    assert set(sc["methods"]) == {"lto", "only-r", "nof", "ssd"}
    lto = sc["methods"]["lto"]
    assert [r["step"] for r in lto["trajectory"]] == [0, 1, 2]
    assert lto["trajectory"][0] == {"step": 0, **sc["reference"]}  # every method starts from one reference
    assert m["chance"] == 10.0
    assert set(m["mean_drop_ratio_at_2"]) == {"lto", "only-r", "nof", "ssd"}
    # a rerun resumes: the obstruction checkpoints are there, the trajectory is the same
    assert main(["lto", "--out", str(out), "--method", "all", "--restricted", "round-shapes;0,3", *TINY]) == 0
    again = json.loads((out / "results.json").read_text())["metrics"]
    assert again["superclasses"]["round-shapes"]["methods"]["lto"]["trajectory"] == lto["trajectory"]


def test_attacker_defender_and_pretraining_streams_are_independent():
    load_runners()
    for seed in (0, 3):
        cfg = RUNNERS["lto"].resolve(ob.config_for("lto", "quick"), seed)
        streams = {cfg.attacker_seed, cfg.attacker_seed + 1, cfg.lto.seed, cfg.pretrain.seed}
        assert len(streams) == 4  # attacker shots, attacker learner, defender, pretraining
        assert cfg.lto.seed not in (cfg.attacker_seed, cfg.attacker_seed + 1)
    d = dataclasses.asdict(cfg)
    assert d["attacker_seed"] == 3 and d["lto"]["seed"] == 13
    # the public backbone's offline stand-in is one artefact: the same for every seed
    assert RUNNERS["lto"].resolve(ob.config_for("lto", "quick"), 0).pretrain.seed == cfg.pretrain.seed


@pytest.mark.parametrize("args,needle", [
    (["--restricted", "wheels"], "restricted class 'wheels'"),
    (["--method", "maml"], "unknown method"),
    (["--set", "beta=0"], "beta"),
    (["--set", "lto.k_learn=9"], "defender_pool"),
    (["--set", "attacker_shots=30"], "attacker_pool"),
])
def test_bad_inputs_fail_with_one_line(tmp_path, cli_fails, args, needle):
    cli_fails(["lto", "--out", str(tmp_path / "bad"), *TINY, *args], needle)


@pytest.mark.parametrize("learner", ["protonet", "metaoptnet"])
def test_classical_learners_run_end_to_end(tmp_path, learner):
    out = tmp_path / learner
    args = ["lto", "--out", str(out), "--learner", learner, "--method", "lto,nof", "--restricted", "round-shapes",
            "--no-progress", "--set", "pretrain_samples=300", "--set", "test_samples=100", "--set", "lto.steps=2",
            "--set", "lto.eval_every=1", "--set", "classical_pretrain.epochs=1",
            "--set", "classical_widths=4,8,8,8",
            "--set", "episodic_attacker.episodes=4", "--set", "episodic_attacker.epochs=1",
            "--set", "episodic_defender.episodes=2", "--set", "obs_episodes=1", "--set", "test_episodes=5"]
    assert main(args) == 0
    sc = json.loads((out / "results.json").read_text())["metrics"]["superclasses"]["round-shapes"]
    assert [r["step"] for r in sc["methods"]["lto"]["trajectory"]] == [0, 1, 2]
    assert not set(sc["meta_classes"]) & set(sc["restricted"])  # the attacker meta-trains on R' only
    assert set(sc["restricted"]) <= set(sc["test_classes"])


def test_attribute_mode_runs_on_class_derived_attributes(tmp_path, monkeypatch):
    from obstructlib.experiments import lto

    # the embedded set's classes stand in for CIFAR-10's: two attributes over its shapes
    monkeypatch.setattr(lto, "ATTRIBUTES", {
        "round": (("circle", "ring", "ellipse"), ("a photo of a straight shape.", "a photo of a round shape.")),
        "bar": (("horizontal bar", "vertical bar"), ("a photo of a blob.", "a photo of a bar.")),
    })
    out = tmp_path / "attr"
    assert main(["lto", "--out", str(out), "--set", "mode=attributes", "--restricted", "round", "--method", "lto",
                 *TINY, "--set", "attribute_task_size=20", "--set", "attribute_obs_size=20"]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    row = m["superclasses"]["round"]["methods"]["lto"]
    assert len(row["collateral"]) == 2 and "drop_ratio_at_2" in row and "acc_r0" in m


def test_superclasses_come_from_the_dataset_or_the_table():
    from obstructlib.errors import ConfigError
    from obstructlib.experiments.lto import _class_sets

    classes = ["circle", "ring", "ellipse", "square", "plus"]
    own = {"round": ("circle", "ring", "ellipse"), "other": ("square", "plus")}
    assert _class_sets("", classes, own) == {"other": [3, 4]}  # the first superclass is kept for validation
    assert _class_sets("round;0,4", classes, own) == {"round": [0, 1, 2], "0,4": [0, 4]}
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert _class_sets("", cifar) == {"vehicles": [0, 1, 8, 9]}
    with pytest.raises(ConfigError, match="some but not all"):
        _class_sets("0,1,2,3,4", classes, own)


def test_quick_classical_learners_take_their_own_outer_rate():
    from obstructlib.experiments import config_for
    from obstructlib.experiments.lto import QUICK_CLASSICAL_LR

    assert config_for("lto", "quick", ["learner=protonet"]).lto.lr == QUICK_CLASSICAL_LR
    assert config_for("lto", "quick", ["learner=protonet", "lto.lr=1e-4"]).lto.lr == 1e-4
    assert config_for("lto", "quick", ["learner=ce"]).lto.lr == 3e-4
