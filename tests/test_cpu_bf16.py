"""bf16 autocast on CPU: off by default, one switch behind the one autocast helper, a field of every runner."""

from __future__ import annotations

import pytest
import torch

import obstructlib as ob
from obstructlib.engine import amp_dtype, autocast, cpu_supports_bf16, set_cpu_autocast


@pytest.fixture(autouse=True)
def _off_afterwards():
    yield
    set_cpu_autocast(False)


def test_off_by_default_so_cpu_results_stay_float32():
    assert amp_dtype("cpu") is None
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_switch_turns_on_only_where_the_cpu_has_native_bf16_unless_forced():
    assert set_cpu_autocast(True) is cpu_supports_bf16()
    assert set_cpu_autocast(True, force=True) and amp_dtype("cpu") == torch.bfloat16
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("cpu", enabled=False):  # a config's amp=False still wins
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not set_cpu_autocast(False) and amp_dtype("cpu") is None


@pytest.mark.parametrize("runner", ["clip", "uc", "mem", "ntp", "ubt", "lto"])
def test_every_runner_has_the_field_off_by_default(runner):
    assert ob.config_for(runner, "quick").cpu_bf16 is False
    assert ob.config_for(runner, "quick", ["cpu_bf16=true"]).cpu_bf16 is True
