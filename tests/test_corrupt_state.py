"""A damaged or truncated state file is one line naming it and saying what to do, never a deep
traceback (issue: reliability, class 2). A killed run cuts a file short; a disk can damage one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from obstructlib.cli import main
from obstructlib.data import PerturbationStore
from obstructlib.errors import ConfigError, reading
from obstructlib.methods.ntp.release import load_released, save_released
from obstructlib.models import create_model

TINY = ["--no-progress", "--set", "train.steps=4", "--set", "train.batch_size=16",
        "--set", "max_train_samples=48", "--set", "max_test_samples=16", "--set", "train.ckpt_every=2"]


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name", ["state.pt", "model.safetensors"])
def test_a_cut_checkpoint_file_is_one_line_and_restart_recovers(name, tmp_path, cli_fails):
    out = tmp_path / "run"
    assert main(["clip", "--out", str(out), *TINY]) == 0
    damaged = out / "checkpoints" / "clip" / name
    assert damaged.is_file()
    _cut(damaged)
    err = cli_fails(["clip", "--out", str(out), *TINY], "is corrupt or cut short")
    assert name in err and "--restart" in err
    first = json.loads((out / "results.json").read_text())["metrics"]["i2t_r1"]
    assert main(["clip", "--out", str(out), "--restart", *TINY]) == 0   # what the line says: it starts over
    assert json.loads((out / "results.json").read_text())["metrics"]["i2t_r1"] == first   # same seed, same run


def test_a_damaged_checkpoint_stage_runs_again_once_deleted(tmp_path):
    import shutil

    out = tmp_path / "run"
    assert main(["clip", "--out", str(out), *TINY]) == 0
    first = json.loads((out / "results.json").read_text())["metrics"]["i2t_r1"]
    _cut(out / "checkpoints" / "clip" / "state.pt")
    shutil.rmtree(out / "checkpoints" / "clip")   # what the error line says to do
    assert main(["clip", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "results.json").read_text())["metrics"]["i2t_r1"] == first   # same seed, same run


def test_a_damaged_perturbation_store_is_one_line(tmp_path):
    store = PerturbationStore(4, (3, 8, 8), eps=8 / 255)
    path = store.save(tmp_path / "store.npy")
    assert PerturbationStore.load(path).num == 4
    _cut(path, 0.3)
    with pytest.raises(ConfigError, match=r"store\.npy is corrupt or cut short"):
        PerturbationStore.load(path)
    (tmp_path / "store.json").write_text("{")
    with pytest.raises(ConfigError, match=r"store\.json is corrupt"):
        PerturbationStore.load(path)


@pytest.mark.parametrize("name", ["released.json", "model.safetensors", "masks.safetensors"])
def test_a_damaged_release_is_one_line(name, tmp_path):
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes=3, widths=(4, 8, 8), pool_size=1)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.encoder.named_parameters() if p.ndim > 1}
    save_released(tmp_path / "rel", model, masks, model_kwargs={"widths": (4, 8, 8), "pool_size": 1})
    load_released(tmp_path / "rel")
    _cut(tmp_path / "rel" / name)
    with pytest.raises(ConfigError, match=f"{name} is corrupt or cut short.*write the release again"):
        load_released(tmp_path / "rel")


def test_reading_passes_one_line_errors_through_and_names_the_rest(tmp_path):
    with pytest.raises(ConfigError, match="already one line"):
        with reading(tmp_path / "x"):
            raise ConfigError("already one line")
    with pytest.raises(ConfigError, match=r"x\.npy is corrupt or cut short \(ValueError\): delete"):
        with reading(tmp_path / "x.npy"):
            (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
            np.load(tmp_path / "x.npy")
