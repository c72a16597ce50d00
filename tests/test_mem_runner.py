"""``obstruct mem`` end to end on tiny settings: contract keys, metric names, resume, bad input."""

import json

import numpy as np
import pytest
import torch

from obstructlib.cli import main
from obstructlib.config import apply_overrides
from obstructlib.experiments.mem import RETRIEVAL_KEYS, MEMRunConfig
from obstructlib.profiles import resolve_profile

TINY = [
    "--no-progress", "--dataset", "synthetic-captions",
    "--set", "max_train_samples=8", "--set", "max_test_samples=6", "--set", "image_size=16",
    "--set", "context_length=16", "--set", "train.steps=2", "--set", "train.batch_size=8",
    "--set", "train.warmup_steps=1",
    "--set", "mem.rounds=1", "--set", "mem.train_steps=1", "--set", "mem.pgd_steps=1",
    "--set", "mem.num_candidates=2", "--set", "mem.batch_size=8",
    "--set", "em.rounds=1", "--set", "em.train_steps=1", "--set", "em.pgd_steps=1", "--set", "em.batch_size=8",
    "--set", "tap.steps=1", "--set", "tap.batch_size=8", "--set", "num_groups=2",
]
CONTRACT = ("command", "profile", "config", "metrics", "timings_s", "device", "versions")


def _run(tmp_path, *argv, name="run"):
    out = tmp_path / name
    assert main(["mem", "--out", str(out), *TINY, *argv]) == 0
    return out, json.loads((out / "results.json").read_text())


def _check(results, zero_shot):
    for key in CONTRACT:
        assert key in results
    m = results["metrics"]
    for row in ("clean", "protected", "chance"):
        assert set(RETRIEVAL_KEYS) <= set(m[row])
        for k in RETRIEVAL_KEYS:
            assert 0 <= m[row][k] <= (100 if "_r" in k else 10_000)
        assert ("zero_shot_acc" in m[row]) == zero_shot
    assert m["noise_bytes_per_pair"] > 0 and 0 < m["noise_linf"] <= 8 / 255 + 1e-9
    assert {"hacker_clean", "hacker_protected", "evaluate"} <= set(results["timings_s"])


def test_mem_on_synthetic_captions_writes_results_and_resumes(tmp_path):
    _, results = _run(tmp_path, "--method", "mem", "--trigger-tokens", "3")
    _check(results, zero_shot=True)
    m = results["metrics"]
    assert m["num_train_pairs"] == 8 * 5 and m["store_mode"] == "sample"  # 5 captions per image, per PAIR
    assert m["noise_bytes_per_pair"] == pytest.approx(3 * 16 * 16 + 3 * 4)  # int8 noise + 3 int32 ids
    assert m["chance"]["t2i_r1"] == pytest.approx(100 / 6)
    assert len(m["protection"]["trigger_examples"]) == 8 and m["throughput"]["noise_pairs_per_s"] > 0
    assert {"protected_loss", "clean_loss"} <= set(m["protection"]["history"][0])  # the shortcut, per round
    assert set(m["hacker_loss_at"]["protected"]) == {"25", "50", "100"}  # 2 steps: the last logged loss
    assert results["config"]["mem"]["trigger_tokens"] == 3
    assert results["config"]["mem"]["eps"] == results["config"]["eps"]
    _, again = _run(tmp_path, "--method", "mem", "--trigger-tokens", "3")
    assert again["metrics"]["store_resumed"]
    assert again["metrics"]["protected"] == m["protected"] and again["metrics"]["clean"] == m["clean"]


def _weights(out, tag):
    from safetensors.torch import load_file

    return load_file(out / "checkpoints" / tag / "model.safetensors")


@pytest.fixture(scope="module")
def undefended(tmp_path_factory):
    """The reference of the countermeasure rows: random noise, no countermeasure."""
    out, _ = _run(tmp_path_factory.mktemp("undefended"), "--method", "random")
    return out


@pytest.mark.parametrize("method, extra", [
    ("em", []),
    ("random", ["--countermeasure", "strip"]),
    ("mem-classwise", ["--countermeasure", "jpeg"]),
    pytest.param("tap", [], marks=pytest.mark.slow),
    pytest.param("mem-noshuffle", ["--countermeasure", "crop", "--set", "protect_fraction=0.5"],
                 marks=pytest.mark.slow),
])
def test_baselines_and_countermeasures_run(tmp_path, method, extra, undefended):
    out, results = _run(tmp_path, "--method", method, *extra)
    _check(results, zero_shot=True)
    m = results["metrics"]
    assert m["method"] == method
    assert m["store_mode"] == ("cluster" if method == "mem-classwise" else "sample")
    noise = np.load(out / "checkpoints" / "store" / "store.npy")
    assert np.count_nonzero(noise) > noise.size // 10  # the method perturbed the images
    triggers = [t for t in m["protection"].get("trigger_examples") or [] if t.strip()]
    assert bool(triggers) == method.startswith("mem")  # MEM published words beside the captions
    if "--countermeasure" in extra:  # the defence changed the hacker's training (on the clean row too)
        mine, plain = _weights(out, "hacker0/clean"), _weights(undefended, "hacker0/clean")
        assert not all(torch.equal(mine[k], plain[k]) for k in plain)


def test_classification_data_gets_templated_captions(tmp_path):
    _, results = _run(tmp_path, "--dataset", "synthetic", "--method", "random", "--set", "max_train_samples=20",
                      "--set", "max_test_samples=10")
    _check(results, zero_shot=True)
    m = results["metrics"]
    assert m["num_train_pairs"] == m["num_train_images"] == 20 and m["chance"]["zero_shot_acc"] == 0.1


def test_hacker_seed_draws_other_hackers_for_the_same_protection(tmp_path):
    from safetensors.torch import load_file

    runs = {seed: _run(tmp_path, "--method", "random", *(["--set", f"hacker_seed={seed}"] if seed is not None else []),
                       name=f"h{seed}")[0] for seed in (None, 0, 1)}
    noise = {s: (out / "checkpoints" / "store" / "store.npy").read_bytes() for s, out in runs.items()}
    assert noise[None] == noise[0] == noise[1]  # the subset and the protection follow --seed only
    for tag in ("hacker0/clean", "hacker0/protected"):
        w = {s: load_file(out / "checkpoints" / tag / "model.safetensors") for s, out in runs.items()}
        assert all(torch.equal(w[None][k], w[0][k]) for k in w[None])  # hacker_seed=0 (the run's seed) is the default
        assert not all(torch.equal(w[None][k], w[1][k]) for k in w[None])


def test_several_hackers_report_mean_and_spread(tmp_path):
    _, results = _run(tmp_path, "--method", "random", "--set", "hackers=2")
    m = results["metrics"]
    assert len(m["hackers"]) == 2 and m["hackers"][0]["seed"] != m["hackers"][1]["seed"]
    for key in RETRIEVAL_KEYS:
        values = [h["protected"][key] for h in m["hackers"]]
        assert m["protected"][key] == pytest.approx(np.mean(values))
        assert m["protected_sd"][key] == pytest.approx(np.std(values, ddof=1))


def test_resuming_with_another_config_is_refused(tmp_path, cli_fails):
    out, _ = _run(tmp_path, "--method", "random")
    cli_fails(["mem", "--out", str(out), *TINY, "--method", "random", "--set", "eps=4/255"], "eps")


@pytest.mark.parametrize("argv, words", [
    (["--method", "nope"], "method="),
    (["--trigger-tokens", "0"], "trigger_tokens="),
    (["--trigger-tokens", "x"], "trigger_tokens"),
    (["--countermeasure", "blur"], "countermeasure="),
    (["--set", "eps=2"], "eps="),
    (["--set", "protect_fraction=1.5"], "protect_fraction="),
    (["--surrogate", "no-such-clip"], "unknown CLIP architecture"),
    (["--dataset", "csv:/nonexistent/captions.csv"], "does not exist"),
    (["--set", "train.batch_size=64"], "exceeds"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, cli_fails, argv, words):
    out = tmp_path / "run"
    cli_fails(["mem", "--out", str(out), *TINY, *argv], words)
    assert not out.exists()


@pytest.mark.parametrize("profile", ["quick", "colab", "paper"])
def test_profiles_give_valid_configs(profile):
    cfg = apply_overrides(MEMRunConfig.for_profile(resolve_profile(profile)), ["method=mem"])
    assert cfg.mem.trigger_tokens == cfg.trigger_tokens == 3 and cfg.em.trigger_tokens == 0
    if profile == "paper":  # the official schedule
        m = cfg.mem
        got = (m.rounds, m.text_rounds, m.train_steps, m.pgd_steps, m.num_candidates, m.batch_size)
        assert got == (20, 5, 200, 8, 16, 128)
        assert m.eps == pytest.approx(8 / 255) and m.step_size == pytest.approx(1 / 255)
        assert cfg.train.epochs == 32 and cfg.train.lr == 5e-4 and cfg.surrogate == cfg.hacker == "RN50"
    if profile == "colab":
        assert cfg.hacker_pretrained == "openai" and cfg.image_size == 224
