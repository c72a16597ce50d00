"""``obstruct ntp`` end to end on tiny settings: contract keys, metric names, resume, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from obstructlib.cli import main
from obstructlib.config import apply_overrides
from obstructlib.data import split_style
from obstructlib.experiments.ntp import NTPRunConfig
from obstructlib.methods.ntp import budget_subset, load_released
from obstructlib.profiles import resolve_profile

TINY = [
    "--no-progress",
    "--set", "max_source_train=120", "--set", "max_target_train=100", "--set", "max_test=60",
    "--set", "image_size=8", "--set", "ratios=0.1,0.5,1.0", "--set", "prune_ratio=0.5",
    "--set", "source_train.epochs=2", "--set", "source_train.batch_size=32",
    "--set", "curve.epochs=1", "--set", "curve.batch_size=32",
    "--set", "source_finetune.epochs=1", "--set", "source_finetune.batch_size=32",
    "--set", "ntp.epochs=1", "--set", "ntp.batch_size=32", "--set", "ntp.max_iters=2", "--set", "ntp.min_iters=1",
    "--set", "ntp.head_epochs=2", "--set", "ntl.epochs=1", "--set", "ntl.batch_size=32",
]
pytestmark = pytest.mark.usefixtures("one_thread")


CONTRACT = ("command", "profile", "config", "metrics", "timings_s", "device", "versions")


def _run(tmp_path, *argv, name="run"):
    out = tmp_path / name
    assert main(["ntp", "--out", str(out), *TINY, *argv]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_ntp_writes_the_issue_metrics_and_resumes(tmp_path, monkeypatch):
    out, results = _run(tmp_path, "--method", "ntp", "--attack", "both")
    for key in CONTRACT:
        assert key in results
    m = results["metrics"]
    assert set(m["source_acc"]) >= {"original", "released"}
    assert 0 < m["sparsity"] < 1 and isinstance(m["slc_auc"]["masked"], float)
    assert isinstance(m["slc_auc"]["dense"], float) and isinstance(m["slc_auc_transfer"], float)
    curves = m["curves"]
    assert curves["ratios"] == [0.1, 0.5, 1.0]
    for name in ("scratch", "transfer", "masked", "dense"):
        assert len(curves[name]) == 3 and all(0 <= a <= 1 for a in curves[name])
    # slc_auc is the log10 area difference; the ln value is ln(10) times it
    assert m["slc_auc_ln"]["masked"] == pytest.approx(m["slc_auc"]["masked"] * np.log(10))
    assert {"source_training", "pruning", "curves"} <= set(results["timings_s"])
    model, masks = load_released(out / "released")  # the artefact a user loads
    assert masks and model.arch == "digits_cnn"
    again = json.loads(json.dumps(results))
    import obstructlib.methods.ntp.curves as curves_module

    calls = []
    real = curves_module.finetune
    monkeypatch.setattr(curves_module, "finetune", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    _, resumed = _run(tmp_path, "--method", "ntp", "--attack", "both")
    assert resumed["metrics"]["curves"] == again["metrics"]["curves"]
    assert calls == []  # every finished curve point is read back, none is trained again


@pytest.mark.parametrize("method", ["magnitude", "ntl", "sparsity", "ntl-admm"])
def test_baselines_run_under_the_same_attack(tmp_path, method):
    out, results = _run(tmp_path, "--method", method, "--attack", "masked")
    m = results["metrics"]
    assert m["method"] == method and m["slc_auc"]["dense"] is None
    assert isinstance(m["slc_auc"]["masked"], float)
    if method == "ntl":
        assert m["sparsity"] == 0.0
    else:
        assert 0 < m["sparsity"] < 1
    if method == "magnitude":
        assert m["sparsity"] == pytest.approx(results["config"]["ntp"]["sparsity"], abs=0.02)
    # the protection changed the encoder the owner releases (the source model is kept beside it)
    source = load_file(out / "checkpoints" / "source_model" / "model.safetensors")
    released = load_file(out / "released" / "model.safetensors")
    enc = [k for k in source if "encoder" in k and source[k].is_floating_point()]
    assert enc and set(enc) <= set(released)
    assert not all(torch.equal(source[k], released[k]) for k in enc)
    if method != "ntl":  # pruned weights are exact zeros in the release
        assert sum(int((released[k] == 0).sum()) for k in enc) > sum(int((source[k] == 0).sum()) for k in enc)


def _write_npz(path, size, seed):
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(80) % 10, np.arange(40) % 10
    x_train = rng.integers(0, 255, (80, size, size), dtype=np.uint8)
    x_test = rng.integers(0, 255, (40, size, size), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def test_npz_pair_like_mnist_to_usps(tmp_path):
    source = _write_npz(tmp_path / "mnist.npz", 28, 0)
    target = _write_npz(tmp_path / "usps.npz", 16, 1)
    _, results = _run(tmp_path, "--source", source, "--target", target, "--attack", "dense",
                      "--set", "max_source_train=none", "--set", "max_target_train=none",
                      "--set", "source_init=simclr", "--set", "simclr.epochs=1", "--set", "simclr.batch_size=32")
    m = results["metrics"]
    assert m["source_init"] == "simclr" and "simclr_pretraining" in results["timings_s"]
    assert m["num_source_train"] == 80 and m["num_target_train"] == 80 and m["num_target_test"] == 40
    assert m["slc_auc"]["masked"] is None and isinstance(m["slc_auc"]["dense"], float)


def test_bad_input_fails_with_one_line_and_leaves_nothing(tmp_path, cli_fails):
    cases = [
        (["--source", "digits", "--target", "no-such-domain"], "no-such-domain"),
        (["--source", "digits", "--target", "digits"], "different domains"),
        (["--set", "ntp.sparsity=1.5"], "sparsity"),
        (["--set", "ratios=0.5,0.1"], "ratios"),
        (["--method", "pruning"], "method"),
    ]
    for i, (argv, needle) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        cli_fails(["ntp", "--out", str(out), *TINY, *argv], needle)
        assert not out.exists()


def test_resuming_with_another_config_is_refused(tmp_path, cli_fails):
    out, _ = _run(tmp_path, "--method", "sparsity", "--attack", "masked")
    cli_fails(["ntp", "--out", str(out), *TINY, "--method", "sparsity", "--attack", "masked",
               "--set", "ntp.rho=0.01"], "ntp.rho")


def test_profiles_and_helpers():
    for name in ("quick", "colab", "paper"):
        cfg = NTPRunConfig.for_profile(resolve_profile(name))
        cfg.validate()
    quick = NTPRunConfig.for_profile(resolve_profile("quick"))
    assert quick.source == "digits" and split_style(quick.target) == ("digits", "mnistm")
    assert split_style("npz:/a+b/usps.npz") == ("npz:/a+b/usps.npz", "none")
    with pytest.raises(Exception, match="ratios"):
        apply_overrides(quick, ["ratios=0.0,1.0"])
    from obstructlib.data import ArrayImageDataset

    labels = np.repeat(np.arange(10), [50] + [5] * 9)  # a rare class must still appear
    ds = ArrayImageDataset(np.zeros((95, 4, 4), np.uint8), labels)
    sub = budget_subset(ds, 0.05, seed=3)
    assert len(sub) >= 10 and set(sub.labels.tolist()) == set(range(10))
