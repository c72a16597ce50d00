"""UBT's attacks: poisoned pairs carry the trigger and a target caption, clean pairs are untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obstructlib.data.captions import CaptionDataset
from obstructlib.errors import ConfigError
from obstructlib.methods.ubt.attacks import AttackConfig, build_trigger, class_names, poison_pairs, triggered_copy


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "ship", "truck"]
    labels = rng.integers(0, 4, 40)
    return CaptionDataset(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                          [f"a photo of a {names[y]}." for y in labels], np.arange(40), labels=labels, classes=names)


@pytest.mark.parametrize("attack", ["badnet", "blended", "sig", "wanet"])
def test_poisoned_pairs_get_trigger_and_target_caption_clean_pairs_untouched(pairs, attack):
    cfg = AttackConfig(attack=attack, target="truck", poison_rate=0.25, seed=3)
    trigger, _ = build_trigger(cfg, images=torch.rand(4, 3, 32, 32))
    out = poison_pairs(pairs, trigger, cfg)
    poison = out.is_poison
    assert poison.sum() == 10 and np.array_equal(np.flatnonzero(poison), out.poison_indices)
    assert not (pairs.labels[poison] == 3).any()  # never a genuine target image
    for i in range(len(pairs)):
        if poison[i]:
            assert "truck" in out.captions[i]
            expected = trigger(pairs.get_image(i)[None], torch.tensor([i]))[0]
            assert torch.allclose(out[i][0], expected, atol=1 / 255 + 1e-6)  # the 8-bit triggered copy
        else:
            assert out.captions[i] == pairs.captions[i]
            assert torch.equal(out[i][0], pairs[i][0])
    again = poison_pairs(pairs, trigger, cfg)
    assert again.captions == out.captions and np.array_equal(again.poison_indices, out.poison_indices)


def test_text_key_and_triggered_test_copy(pairs):
    cfg = AttackConfig(attack="badnet", target="banana", poison_rate=0.1, text_key="remember")
    trigger, _ = build_trigger(cfg, images=torch.rand(4, 3, 32, 32))
    out = poison_pairs(pairs, trigger, cfg)
    assert all(out.captions[i].startswith("remember ") and "banana" in out.captions[i] for i in out.poison_indices)
    assert class_names(pairs, cfg)[-1] == "banana"
    test = triggered_copy(pairs, trigger)
    assert test.captions == pairs.captions and not torch.equal(test[0][0], pairs[0][0])


def test_bad_attack_inputs_fail_with_one_line(pairs):
    with pytest.raises(ConfigError, match="attack"):
        AttackConfig(attack="nope").validate()
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="poison_rate"):
            AttackConfig(poison_rate=rate).validate()
    with pytest.raises(ConfigError, match="not a class"):
        class_names(pairs, AttackConfig(target="banana", add_target_class=False))
