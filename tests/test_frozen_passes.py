"""Input-only optimisation never builds a weight-gradient graph: every PGD step and HotFlip search
of EM, TAP and MEM runs with the model's parameters frozen (issue 17's "known waste")."""

from __future__ import annotations

import pytest
import torch

import obstructlib.methods.mem.steps as mem_steps
import obstructlib.primitives.perturb as perturb_module
from obstructlib.data import load_dataset, load_pairs, seeded_subset
from obstructlib.methods.mem import MEMConfig, protect
from obstructlib.models import create_clip, create_model
from obstructlib.primitives.poisons import (
    ErrorMaxConfig,
    ErrorMinConfig,
    error_maximizing_noise,
    error_minimizing_noise,
)


def watch(monkeypatch, model: torch.nn.Module) -> list[bool]:
    """Record, at every PGD loss evaluation and HotFlip search, whether any parameter requires grad."""
    seen: list[bool] = []
    pgd, hotflip = perturb_module.pgd, mem_steps.hotflip_attack

    def pgd_watched(loss_fn, *args, **kwargs):
        def checked(z):
            seen.append(any(p.requires_grad for p in model.parameters()))
            return loss_fn(z)
        return pgd(checked, *args, **kwargs)

    def hotflip_watched(*args, **kwargs):
        seen.append(any(p.requires_grad for p in model.parameters()))
        return hotflip(*args, **kwargs)

    monkeypatch.setattr(perturb_module, "pgd", pgd_watched)
    monkeypatch.setattr(mem_steps, "hotflip_attack", hotflip_watched)
    return seen


@pytest.fixture
def digits():
    return seeded_subset(load_dataset("digits", None, "train", image_size=16, channels=3, progress=False), 32, seed=0)


def test_em_and_tap_noise_passes_run_the_model_frozen(monkeypatch, digits):
    model = create_model("digits_cnn", num_classes=10)
    seen = watch(monkeypatch, model)
    em = ErrorMinConfig(steps=2, train_steps=2, max_rounds=1, batch_size=16, amp=False)
    error_minimizing_noise(model, digits, em, "cpu", progress=False)
    error_maximizing_noise(model, digits, ErrorMaxConfig(steps=2, batch_size=16, amp=False), "cpu", progress=False)
    assert len(seen) == 2 * 2 + 2 * 2 and not any(seen)  # 2 batches x 2 steps, each pass
    assert all(p.requires_grad for p in model.parameters())  # and unfrozen again afterwards


def test_mem_trigger_search_and_image_steps_run_the_surrogate_frozen(monkeypatch):
    pairs = load_pairs("synthetic", None, "train", image_size=32, max_samples=16, progress=False)
    torch.manual_seed(0)
    clip = create_clip("tiny-rn", None, image_size=32, context_length=20)
    seen = watch(monkeypatch, clip)
    cfg = MEMConfig(rounds=1, text_rounds=1, train_steps=2, pgd_steps=2, num_candidates=2, batch_size=8, amp=False)
    protect(pairs, cfg, surrogate=clip, device="cpu", progress=False)
    assert len(seen) == 2 + 2 * 2 and not any(seen)  # 2 batches: one HotFlip search and 2 PGD steps each
    assert all(p.requires_grad for p in clip.parameters())
