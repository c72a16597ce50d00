"""Checkpoints: round trip, weights_only safety, unwrapped names, atomic replacement."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import obstructlib.engine.checkpoint as ckpt_mod
from obstructlib.engine import has_checkpoint, load_checkpoint, save_checkpoint, seed_everything
from obstructlib.errors import ConfigError


@dataclass
class Cfg:
    lr: float = 0.1
    betas: tuple = (0.9, 0.98)
    root: Path = Path("data")
    name: str | None = None


class Tied(nn.Module):
    """Embedding and output head sharing one weight (as language models tie them)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("count", torch.tensor(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(x)))


def trained(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(steps):
        loss = model(torch.arange(10)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    seed_everything(0)
    model, opt, sched = trained()
    save_checkpoint(
        tmp_path / "ck", model, opt, sched, step=7, config=Cfg(), extra={"history": {"loss": [1.0, 0.5]}}
    )
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    # state.pt holds only weights_only-safe objects; config became a plain dict
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert state["config"] == {"lr": 0.1, "betas": (0.9, 0.98), "root": "data", "name": None}
    assert set(load_file(tmp_path / "ck" / "model.safetensors")) <= {
        "emb.weight",
        "head.weight",
        "norm.weight",
        "norm.bias",
        "count",
    }

    seed_everything(99)
    model2 = Tied()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    meta = load_checkpoint(tmp_path / "ck", model2, opt2, sched2)
    assert meta["step"] == 7 and meta["extra"] == {"history": {"loss": [1.0, 0.5]}}
    assert meta["config"]["lr"] == 0.1
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert model2.head.weight is model2.emb.weight  # tying survives loading
    assert sched2.state_dict() == sched.state_dict()
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, value in s1["state"][k].items():
            assert torch.equal(value, s2["state"][k][name])
    # RNG restored: the next draws equal those right after saving
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert (
        got[0] == expected_draws[0] and got[1] == expected_draws[1] and torch.equal(got[2], expected_draws[2])
    )


def test_restore_rng_false_leaves_rng_alone(tmp_path):
    model, _, _ = trained(0)
    save_checkpoint(tmp_path / "ck", model)
    target = Tied()
    seed_everything(5)
    expected = torch.rand(2)
    seed_everything(5)
    load_checkpoint(tmp_path / "ck", target, restore_rng=False)
    assert torch.equal(torch.rand(2), expected)


def test_wrapped_model_saved_without_module_prefix(tmp_path):
    model = nn.DataParallel(nn.Linear(3, 2))  # on CPU it only wraps, like DDP it prefixes "module."
    assert next(iter(model.state_dict())).startswith("module.")
    save_checkpoint(tmp_path / "ck", model, step=1)
    assert set(load_file(tmp_path / "ck" / "model.safetensors")) == {"weight", "bias"}
    target = nn.DataParallel(nn.Linear(3, 2))
    load_checkpoint(tmp_path / "ck", target)
    assert torch.equal(target.module.weight, model.module.weight)


def test_missing_and_mismatched_checkpoints_raise(tmp_path):
    assert not has_checkpoint(tmp_path / "none") and not has_checkpoint(None)
    with pytest.raises(ConfigError):
        load_checkpoint(tmp_path / "none", nn.Linear(2, 2))
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2))
    with pytest.raises(ConfigError):
        load_checkpoint(tmp_path / "ck", nn.Linear(3, 2))
    with pytest.raises(ConfigError):
        load_checkpoint(tmp_path / "ck", nn.Sequential(nn.Linear(2, 2)))


def test_refuses_to_replace_a_directory_with_other_files(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(ConfigError):
        save_checkpoint(tmp_path / "run", nn.Linear(2, 2))
    assert (tmp_path / "run" / "results.json").exists()
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", nn.Linear(2, 2), step=4)
    assert load_checkpoint(tmp_path / "empty")["step"] == 4


def _visible_checkpoints(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if has_checkpoint(p) and not p.name.startswith("."))


def test_failure_while_writing_keeps_old_checkpoint(tmp_path, monkeypatch):
    old = nn.Linear(2, 2)
    save_checkpoint(tmp_path / "ck", old, step=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), step=2)
    monkeypatch.undo()
    assert has_checkpoint(tmp_path / "ck")
    model = nn.Linear(2, 2)
    assert load_checkpoint(tmp_path / "ck", model)["step"] == 1
    assert torch.equal(model.weight, old.weight)
    assert _visible_checkpoints(tmp_path) == ["ck"]
    # the half-written temp dir is not a checkpoint and is cleaned by the next save
    assert not has_checkpoint(tmp_path / ".ck.tmp")
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), step=3)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    assert load_checkpoint(tmp_path / "ck")["step"] == 3


def test_crash_between_renames_is_recovered(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), step=1)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # "ck -> .ck.old" done, "tmp -> ck" crashes
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), step=2)
    monkeypatch.undo()
    assert not (tmp_path / "ck").exists()
    assert has_checkpoint(tmp_path / "ck")  # the old checkpoint is put back
    assert load_checkpoint(tmp_path / "ck")["step"] == 1
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), step=2)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    assert load_checkpoint(tmp_path / "ck")["step"] == 2
