"""The hacker never replays the protector: other initial weights, another data order, for every runner.

A hacker built from the protector's seed, right after the same ``manual_seed``, starts from the
surrogate's very weights and draws batches in its order, so it follows the trajectory the noise was
optimised against. These tests build each runner's protector and hackers with spies on the model
factories and the training loops, and check that no hacker shares the protector's initial weights
or data-order seed, in the default run and with several hackers.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

import obstructlib as ob
from obstructlib.experiments.common import derive_seed, hacker_seeds


def _fingerprint(model: torch.nn.Module) -> tuple[float, ...]:
    return tuple(float(p.detach().double().sum()) for p in model.parameters())


class Spy:
    """Records, per role, the initial weights of every model built and the seed of every training recipe."""

    def __init__(self, monkeypatch):
        self.weights: dict[str, list[tuple[float, ...]]] = {"protector": [], "hacker": []}
        self.seeds: dict[str, list[int]] = {"protector": [], "hacker": []}
        self.monkeypatch = monkeypatch

    def factory(self, module, name, role):
        real = getattr(module, name)

        def built(*args, **kwargs):
            model = real(*args, **kwargs)
            self.weights[role].append(_fingerprint(model))
            return model

        self.monkeypatch.setattr(module, name, built)

    def trainer(self, module, name, role):
        real = getattr(module, name)

        def trained(*args, **kwargs):
            recipe = next(a for a in (*args, *kwargs.values()) if dataclasses.is_dataclass(a) and hasattr(a, "seed"))
            self.seeds[role].append(int(recipe.seed))
            return real(*args, **kwargs)

        self.monkeypatch.setattr(module, name, trained)

    def check(self, run_seed: int, protector_seeds: set[int]):
        assert self.weights["protector"] and self.weights["hacker"], "both sides must have built a model"
        for w in self.weights["hacker"]:
            assert w not in self.weights["protector"], "a hacker starts from the protector's initial weights"
        assert not set(self.seeds["hacker"]) & (protector_seeds | set(self.seeds["protector"]) | {run_seed})


UC_TINY = ["max_train_samples=40", "max_test_samples=20", "image_size=16", "train.epochs=1", "train.batch_size=20",
           "target_model=digits_cnn", "protector_model=digits_cnn", "surrogate_epochs=1", "uc.num_clusters=2",
           "uc.epochs=1", "uc.ngf=4", "uc.n_blocks=1", "uc.batch_size=20", "uc.kmeans_n_init=1", "em.max_rounds=1",
           "em.steps=1", "em.train_steps=1", "em.batch_size=20", "tap.steps=1", "tap.batch_size=20"]


@pytest.mark.parametrize("method, surrogate", [("em-sample", None), ("tap", None), ("uc", "classifier:digits_cnn"),
                                               ("uc", "simclr:digits_cnn")])
def test_uc_hackers_never_share_the_protectors_weights_or_data_order(tmp_path, monkeypatch, method, surrogate):
    runner = importlib.import_module("obstructlib.experiments.uc")
    hacker = importlib.import_module("obstructlib.methods.uc.evaluate")  # the package exports a function of that name

    spy = Spy(monkeypatch)
    surrogates = importlib.import_module("obstructlib.methods.uc.surrogates")
    spy.factory(runner, "create_model", "protector")  # EM's and TAP's model
    spy.factory(surrogates, "create_model", "protector")  # UC's surrogate, label-free or label-aware
    spy.factory(hacker, "create_model", "hacker")
    spy.trainer(runner, "fit_classifier", "protector")
    spy.trainer(surrogates, "fit_classifier", "protector")
    spy.trainer(surrogates, "simclr_pretrain", "protector")
    spy.trainer(hacker, "fit_classifier", "hacker")
    extra = [f"surrogate={surrogate}", "simclr.batch_size=20"] if surrogate else []
    res = ob.run("uc", profile="quick", seed=0, overrides=[*UC_TINY, f"method={method}", "hackers=2", *extra],
                 out=tmp_path / "run", progress=False)
    cfg = res["config"]
    spy.check(0, {cfg["uc"]["seed"], cfg["em"]["seed"], cfg["tap"]["seed"]})
    assert len(spy.weights["hacker"]) == 4 and len(set(spy.weights["hacker"])) == 2  # 2 hackers x (clean, protected)
    assert [h["seed"] for h in res["metrics"]["hackers"]] == hacker_seeds(0, None, 2)


MEM_TINY = ["max_train_samples=8", "max_test_samples=6", "image_size=16", "context_length=16", "train.steps=1",
            "train.batch_size=8", "train.warmup_steps=1", "mem.rounds=1", "mem.train_steps=1", "mem.pgd_steps=1",
            "mem.num_candidates=2", "mem.batch_size=8", "em.rounds=1", "em.train_steps=1", "em.pgd_steps=1",
            "em.batch_size=8", "tap.steps=1", "tap.batch_size=8", "dataset=synthetic-captions"]


@pytest.mark.parametrize("method", ["mem", "tap"])
def test_mem_hackers_never_share_the_surrogates_weights_or_data_order(tmp_path, monkeypatch, method):
    runner = importlib.import_module("obstructlib.experiments.mem")
    hacker = importlib.import_module("obstructlib.methods.mem.evaluate")

    spy = Spy(monkeypatch)
    spy.factory(runner, "create_clip", "protector")  # the surrogate (MEM, EM) or TAP's clean CLIP
    spy.factory(hacker, "create_clip", "hacker")
    spy.trainer(runner, "fit_clip", "protector")
    spy.trainer(hacker, "fit_clip", "hacker")
    res = ob.run("mem", profile="quick", seed=0, overrides=[*MEM_TINY, f"method={method}", "hackers=2"],
                 out=tmp_path / "run", progress=False)
    cfg = res["config"]
    spy.check(0, {cfg["mem"]["seed"], cfg["em"]["seed"], cfg["tap"]["seed"]})
    assert len(set(spy.weights["hacker"])) == 2


def test_ntp_attacker_draws_from_its_own_stream(tmp_path, monkeypatch):
    attack = importlib.import_module("obstructlib.methods.ntp.evaluate")

    seen = {}
    real = attack.learning_curves

    def spy(*args, **kwargs):
        seen["seed"] = kwargs["seed"]
        return real(*args, **kwargs)

    monkeypatch.setattr(attack, "learning_curves", spy)
    tiny = ["max_source_train=120", "max_target_train=100", "max_test=60", "image_size=8", "ratios=0.1,1.0",
            "prune_ratio=0.5", "source_train.epochs=1", "source_train.batch_size=32", "curve.epochs=1",
            "curve.batch_size=32", "source_finetune.epochs=1", "source_finetune.batch_size=32", "ntp.epochs=1",
            "ntp.batch_size=32", "ntp.max_iters=1", "ntp.min_iters=1", "ntp.head_epochs=1", "method=sparsity"]
    res = ob.run("ntp", profile="quick", seed=0, overrides=tiny, out=tmp_path / "run", progress=False)
    from test_config_resolution import _seed_fields

    owner = {v for _, v in _seed_fields(res["config"])}
    assert seen["seed"] == derive_seed(0, "attacker") == res["metrics"]["attacker_seed"]
    assert seen["seed"] not in owner | {0}


def test_derived_seeds_are_distinct_across_roles_runs_and_hackers():
    seeds = {derive_seed(run, role, i) for run in range(20) for role in ("hacker", "attacker") for i in range(5)}
    assert len(seeds) == 200 and not seeds & set(range(20))
    assert dataclasses.is_dataclass(ob.config_for("uc", "quick"))
