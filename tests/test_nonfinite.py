"""NaN and inf never become a result: configs refuse them, metrics refuse non-finite model outputs,
and results files stay strict JSON (issue: reliability, class 1)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import obstructlib as ob
from obstructlib.data import load_pairs
from obstructlib.engine.checkpoint import write_json_atomic
from obstructlib.errors import ConfigError, NonFiniteError, check_min
from obstructlib.metrics.classification import accuracy, kl_divergence, zero_shot_accuracy
from obstructlib.metrics.retrieval import retrieval_metrics

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_check_min_refuses_non_finite_numbers(value):
    # NaN compares False with everything, so `value < low` alone let it through
    with pytest.raises(ConfigError, match="finite"):
        check_min(SimpleNamespace(lr=value), ("lr",), 0.0, strict=True)
    check_min(SimpleNamespace(lr=1e-3), ("lr",), 0.0, strict=True)  # a finite value still passes


def test_retrieval_of_nan_features_is_refused_not_perfect():
    images, texts = torch.randn(8, 4), torch.randn(8, 4)
    ids = np.arange(8)
    assert retrieval_metrics(images, texts, ids)["i2t_r1"] <= 100.0
    images[3, 1] = NAN
    # without the check: every similarity of image 3 is NaN and its caption ranks first
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        retrieval_metrics(images, texts, ids)
    with pytest.raises(NonFiniteError):
        retrieval_metrics(torch.randn(8, 4), torch.full((8, 4), INF), ids)


def test_accuracy_and_kl_refuse_non_finite_logits():
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    accuracy(logits, targets)
    logits[2] = NAN   # argmax of a NaN row is whatever torch returns: not a prediction
    with pytest.raises(NonFiniteError, match="logits"):
        accuracy(logits, targets)
    with pytest.raises(NonFiniteError, match="class_features"):
        zero_shot_accuracy(torch.randn(6, 4), torch.full((3, 4), NAN), targets)
    with pytest.raises(NonFiniteError, match="logits_q"):
        kl_divergence(torch.zeros(2, 3), torch.tensor([[0.0, INF, 0.0], [0.0, 0.0, 0.0]]))
    assert accuracy(torch.tensor([0, 1, 2, 0, 1, 2]), targets) == 1.0   # class indices are not checked


def test_a_diverged_clip_fails_its_evaluation_with_one_line():
    # the example: a CLIP whose weights went NaN scored R@1 = 100 and median rank 1
    torch.manual_seed(0)
    model = ob.create_clip("tiny-rn", None, device="cpu", image_size=32)
    test = load_pairs("synthetic-scenes", None, "test", image_size=32, max_samples=16, progress=False)
    ob.evaluate_clip(model, test, "cpu")   # finite weights: a score
    with torch.no_grad():
        model.logit_scale.fill_(NAN)
        next(p for n, p in model.named_parameters() if "visual" in n and p.ndim > 1).fill_(NAN)
    with pytest.raises(NonFiniteError) as err:
        ob.evaluate_clip(model, test, "cpu")
    assert "\n" not in str(err.value) and "diverged" in str(err.value)


def test_results_files_stay_strict_json(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"acc": NAN, "rows": [{"r": INF}, 1.5], "n": 3, "name": "x"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert loaded == {"acc": None, "rows": [{"r": None}, 1.5], "n": 3, "name": "x"}
    assert not [p for p in tmp_path.iterdir() if p.name != "results.json"]   # no temporary left
    assert math.isfinite(loaded["rows"][1])
