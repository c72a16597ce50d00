from dataclasses import dataclass, field
from typing import Literal

import pytest

from obstructlib.config import apply_overrides, config_to_dict
from obstructlib.errors import ConfigError, ObstructError, check_range
from obstructlib.profiles import PROFILES, resolve_profile


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 10


@dataclass
class Outer:
    eps: float = 8 / 255
    name: str = "uc"
    flag: bool = False
    maybe: int | None = None
    ks: tuple[int, ...] = (1, 5, 10)
    mode: Literal["sample", "cluster"] = "sample"
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        check_range("eps", self.eps, 0, 1)


def test_overrides_parse_every_type():
    cfg = apply_overrides(Outer(), ["eps=16/255", "name=em", "flag=true", "maybe=3", "ks=1,2",
                                    "mode=cluster", "inner.lr=1e-3", "inner.steps=7"])
    assert cfg.eps == pytest.approx(16 / 255)
    assert (cfg.name, cfg.flag, cfg.maybe, cfg.ks, cfg.mode) == ("em", True, 3, (1, 2), "cluster")
    assert (cfg.inner.lr, cfg.inner.steps) == (1e-3, 7)
    assert apply_overrides(cfg, ["maybe=none"]).maybe is None


def test_overrides_do_not_mutate_the_original():
    cfg = Outer()
    apply_overrides(cfg, ["inner.lr=5"])
    assert cfg.inner.lr == 0.1


@pytest.mark.parametrize("bad, words", [
    ("eps", "key=value"), ("=3", "key=value"), ("nope=1", "unknown key"), ("inner.nope=1", "unknown key"),
    ("inner=3", "group"), ("name.x=1", "no sub-keys"), ("inner.steps=1.5", "integer"),
    ("flag=maybe", "true or false"), ("eps=abc", "number"), ("mode=x", "choose one of"), ("eps=2", "outside"),
])
def test_bad_overrides_are_one_clear_line(bad, words):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Outer(), [bad])
    assert words in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ObstructError)


def test_config_to_dict_is_json_ready():
    import json

    d = config_to_dict(Outer())
    assert d["inner"] == {"lr": 0.1, "steps": 10} and d["ks"] == [1, 5, 10]
    json.dumps(d)


def test_profiles_resolve(monkeypatch):
    assert set(PROFILES) == {"quick", "colab", "paper"}
    assert resolve_profile("paper").name == "paper"
    monkeypatch.setenv("OBSTRUCT_PROFILE", "colab")
    assert resolve_profile().name == "colab"
    monkeypatch.delenv("OBSTRUCT_PROFILE")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile().name == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile().name == "colab"
    with pytest.raises(ConfigError, match="unknown profile"):
        resolve_profile("huge")
    # offline profile trains from scratch; the GPU profiles use real pretrained tags
    assert PROFILES["quick"].clip_pretrained is None
    assert PROFILES["colab"].clip_pretrained and PROFILES["paper"].clip_pretrained
