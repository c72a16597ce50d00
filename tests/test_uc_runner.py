"""``obstruct uc`` end to end on tiny settings: contract keys, metric names, resume, bad input."""

import json

import numpy as np
import pytest
import torch

from obstructlib.cli import main
from obstructlib.config import apply_overrides
from obstructlib.experiments.uc import UCRunConfig
from obstructlib.profiles import resolve_profile

TINY = [
    "--no-progress",
    "--set", "max_train_samples=64", "--set", "max_test_samples=32", "--set", "image_size=16",
    "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "target_model=digits_cnn",
    "--set", "protector_model=digits_cnn", "--set", "surrogate_epochs=1",
    "--set", "uc.num_clusters=3", "--set", "uc.epochs=1", "--set", "uc.ngf=4", "--set", "uc.n_blocks=1",
    "--set", "uc.batch_size=32", "--set", "uc.kmeans_n_init=1", "--set", "uc.kmeans_iters=20",
    "--set", "em.max_rounds=1", "--set", "em.steps=2", "--set", "em.train_steps=1", "--set", "em.batch_size=32",
    "--set", "tap.steps=2", "--set", "tap.batch_size=32", "--set", "adv.steps=1",
]
CONTRACT = ("command", "profile", "config", "metrics", "timings_s", "device", "versions")


def _run(tmp_path, *argv):
    out = tmp_path / "run"
    assert main(["uc", "--out", str(out), *TINY, *argv]) == 0
    return out, json.loads((out / "results.json").read_text())


def _check_metrics(results, num_hacker_classes):
    for key in CONTRACT:
        assert key in results
    m = results["metrics"]
    for key in ("chance", "acc_drop", "noise_linf"):
        assert isinstance(m[key], float)
    assert 0 <= m["clean"]["test_acc"] <= 1 and 0 <= m["protected"]["test_acc"] <= 1
    assert m["acc_drop"] == pytest.approx(m["clean"]["test_acc"] - m["protected"]["test_acc"])
    assert m["chance"] == pytest.approx(1 / num_hacker_classes) and m["num_classes_hacker"] == num_hacker_classes
    assert 0 < m["noise_linf"] <= 16 / 255 + 1e-9
    assert "target_training" in results["timings_s"]


def test_random_writes_results_and_resumes(tmp_path):
    _, results = _run(tmp_path, "--method", "random")
    _check_metrics(results, 10)
    assert results["command"] == "uc" and results["config"]["method"] == "random"
    assert "noise_generation" in results["timings_s"] and not results["metrics"]["store_resumed"]
    _, again = _run(tmp_path, "--method", "random")
    assert again["metrics"]["store_resumed"]
    for row in ("clean", "protected"):  # the finished target trainings are loaded, not repeated
        assert again["metrics"][row]["test_acc"] == results["metrics"][row]["test_acc"]


def test_hacker_seed_draws_other_hackers_for_the_same_protection(tmp_path):
    from safetensors.torch import load_file

    a, _ = _run(tmp_path / "a", "--method", "random")
    b, _ = _run(tmp_path / "b", "--method", "random", "--set", "hacker_seed=1")
    c, _ = _run(tmp_path / "c", "--method", "random", "--set", "target_seed=0")  # the old name still works

    def noise(out):
        return (out / "checkpoints" / "store" / "store.npy").read_bytes()

    def weights(out, tag):
        return load_file(out / "checkpoints" / tag / "model.safetensors")

    assert noise(a) == noise(b) == noise(c)  # the subset and the protection follow --seed only
    for tag in ("hacker0/clean", "hacker0/protected"):
        wa, wb, wc = weights(a, tag), weights(b, tag), weights(c, tag)
        assert all(torch.equal(wa[k], wc[k]) for k in wa)  # hacker_seed=0 (the run's seed) is the default
        assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_several_hackers_report_mean_and_spread(tmp_path):
    from safetensors.torch import load_file

    out, results = _run(tmp_path, "--method", "random", "--set", "hackers=3")
    m = results["metrics"]
    assert len(m["hackers"]) == 3 and len({h["seed"] for h in m["hackers"]}) == 3
    for row in ("clean", "protected"):
        accs = [h[row] for h in m["hackers"]]
        assert m[row]["test_acc"] == pytest.approx(np.mean(accs))
        assert m[row]["test_acc_sd"] == pytest.approx(np.std(accs, ddof=1))
    assert m["acc_drop"] == pytest.approx(np.mean([h["clean"] - h["protected"] for h in m["hackers"]]))
    first = [load_file(out / "checkpoints" / f"hacker{i}" / "clean" / "model.safetensors") for i in range(3)]
    assert not all(torch.equal(first[0][k], first[1][k]) for k in first[0])  # independent initial weights


def test_finer_labels_craft_em_with_the_protectors_groups_and_train_the_hacker_on_every_class(tmp_path, monkeypatch):
    import obstructlib.experiments.uc as uc

    seen = {}
    real = uc.error_minimizing_noise

    def spy(model, train, *args, **kwargs):
        seen["classes"] = len(train.classes)
        seen["labels"] = sorted({int(train[i][1]) for i in range(len(train))})
        return real(model, train, *args, **kwargs)

    monkeypatch.setattr(uc, "error_minimizing_noise", spy)
    _, results = _run(tmp_path, "--method", "em-sample", "--labels", "finer-2")
    m = results["metrics"]
    assert seen == {"classes": 2, "labels": [0, 1]}  # EM saw two groups only
    assert m["protector_labels"] == "random-2" and m["num_classes_hacker"] == 10
    assert m["label_mapping"] == list(range(10))


def test_resuming_with_another_config_is_refused(tmp_path, cli_fails):
    out, _ = _run(tmp_path, "--method", "random")
    cli_fails(["uc", "--out", str(out), *TINY, "--method", "random", "--labels", "random-3"], "labels")
    assert (out / "results.json").is_file()  # the earlier run is left alone


def test_uc_with_coarse_labels(tmp_path):
    # the embedded synthetic set has superclasses (the quick default, digits, has none)
    _, results = _run(tmp_path, "--method", "uc", "--labels", "coarse", "--set", "dataset=synthetic")
    _check_metrics(results, 3)
    m = results["metrics"]
    assert m["store_mode"] == "cluster" and sum(m["protection"]["cluster_sizes"]) == 64
    assert m["label_mapping"] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert {"clustering", "generator_training", "surrogate_training"} <= set(results["timings_s"])
    assert results["config"]["uc"]["eps"] == results["config"]["eps"]  # one budget for every method


SLOW = pytest.mark.slow


def _noise(out):
    return (out / "checkpoints" / "store" / "store.npy").read_bytes()


def _weights(out, tag):
    from safetensors.torch import load_file

    return load_file(out / "checkpoints" / tag / "model.safetensors")


@pytest.fixture(scope="module")
def undefended(tmp_path_factory):
    """The reference run of the countermeasure tests: random noise, no countermeasure."""
    out, _ = _run(tmp_path_factory.mktemp("undefended"), "--method", "random")
    return out


@pytest.mark.parametrize("method, labels, classes", [
    ("em-sample", "random-4", 4),
    pytest.param("em-class", "original", 10, marks=SLOW),
    pytest.param("tap", "original", 10, marks=SLOW),
    pytest.param("uc-clip", "random-2", 2, marks=SLOW),
])
def test_other_methods(tmp_path, method, labels, classes):
    out, results = _run(tmp_path, "--method", method, "--labels", labels)
    _check_metrics(results, classes)
    noise = np.load(out / "checkpoints" / "store" / "store.npy")
    assert np.count_nonzero(noise) > noise.size // 10  # the method perturbed the images
    assert results["metrics"]["store_mode"] == ("cluster" if method in ("em-class", "uc-clip") else "sample")


@pytest.mark.parametrize("countermeasure", [
    "jpeg",  # a per-image transform in the dataset
    "adv",  # a per-batch step (fit_defended)
    pytest.param("grayscale", marks=SLOW),
    pytest.param("cutout", marks=SLOW),
    pytest.param("mixup", marks=SLOW),
])
def test_countermeasures_run(tmp_path, countermeasure, undefended):
    out, results = _run(tmp_path, "--method", "random", "--countermeasure", countermeasure)
    _check_metrics(results, 10)
    assert results["metrics"]["countermeasure"] == countermeasure
    # the same protection and hackers without the defence: the defence changed both trainings
    assert (out / "checkpoints" / "store" / "store.npy").read_bytes() == _noise(undefended)
    for tag in ("hacker0/clean", "hacker0/protected"):
        mine, plain = _weights(out, tag), _weights(undefended, tag)
        assert not all(torch.equal(mine[k], plain[k]) for k in plain), tag


@pytest.mark.parametrize("argv, words", [
    (["--method", "nope"], "method="),
    (["--method", "random", "--labels", "random-0"], "random-0"),
    (["--method", "random", "--labels", "random-x"], "random-N"),
    (["--method", "random", "--set", "eps=2"], "eps="),
    (["--method", "random", "--countermeasure", "blur"], "countermeasure="),
    (["--method", "uc", "--set", "uc.num_clusters=100"], "num_clusters"),
    (["--method", "random", "--labels", "random-10"], "2 <= N < 10"),  # found after loading the data
    (["--method", "random", "--labels", "coarse", "--dataset", "digits"], "superclass"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, cli_fails, argv, words):
    out = tmp_path / "run"
    cli_fails(["uc", "--out", str(out), *TINY, *argv], words)
    assert not out.exists()


@pytest.mark.parametrize("profile", ["quick", "colab", "paper"])
def test_profiles_give_valid_configs(profile):
    cfg = apply_overrides(UCRunConfig.for_profile(resolve_profile(profile)), ["method=em-sample"])
    assert cfg.train.momentum == 0.9 and cfg.train.weight_decay == 5e-4 and cfg.train.lr == 0.1
    if profile == "paper":
        assert cfg.train.epochs == 90 and cfg.train.batch_size == 512 and cfg.image_size == 224
        assert cfg.uc.ngf == 64 and cfg.uc.n_blocks == 6 and cfg.uc.epochs == 50
