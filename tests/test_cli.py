"""The interface contract of the `obstruct` command."""

import json
import os
import subprocess
import sys

import pytest
import torch

from obstructlib.cli import main

TINY = ["--no-progress", "--set", "train.steps=4", "--set", "train.batch_size=16",
        "--set", "max_train_samples=48", "--set", "max_test_samples=16", "--set", "train.ckpt_every=2"]


def test_info_lists_datasets_and_fetch_commands(capsys, tmp_path):
    assert main(["info", "--json", "--data-root", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profile"] == "quick"
    assert report["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["datasets"]["digits"]["present"]
    cifar = report["datasets"]["cifar10"]
    assert not cifar["present"] and "obstruct data fetch cifar10" in cifar["fetch"] and str(tmp_path) in cifar["fetch"]


@pytest.mark.parametrize("argv, words", [
    (["clip", "--set", "train.steps"], "key=value"),
    (["clip", "--set", "nope=1"], "unknown key"),
    (["clip", "--set", "image_size=4"], "outside"),
    (["clip", "--dataset", "imagenet21k"], "unknown dataset"),
    (["clip", "--dataset", "npz:/no/such/file.npz"], "/no/such/file.npz"),
    (["clip", "--dataset", "cifar10"], "obstruct data fetch cifar10"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(argv, words, tmp_path, cli_fails):
    out = tmp_path / "run"
    cli_fails([*argv, "--out", str(out), "--data-root", str(tmp_path / "data"), "--no-progress"], words)
    assert not out.exists()


def test_argparse_errors_are_one_line_with_status_2():
    res = subprocess.run([sys.executable, "-m", "obstructlib", "clip", "--profile", "huge"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_clip_run_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["clip", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("command", "profile", "config", "metrics", "timings_s", "device", "versions"):
        assert key in results
    assert results["command"] == "clip" and results["config"]["train"]["steps"] == 4
    assert {"i2t_r1", "t2i_r1", "zero_shot_acc", "chance"} <= set(results["metrics"])
    # Re-running with the same --out resumes from the final checkpoint: no training step is repeated.
    assert main(["clip", "--out", str(out), *TINY]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["timings_s"]["train"] < max(1.0, results["timings_s"]["train"])
    assert again["metrics"]["i2t_r1"] == results["metrics"]["i2t_r1"]


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_keeps_its_files(tmp_path, cli_fails):
    from obstructlib.experiments.common import LOCK_FILE, run_lock

    out = tmp_path / "run"
    out.mkdir()
    (out / "kept.txt").write_text("the first run's file")
    with run_lock(out):   # the first run, still going
        assert (out / LOCK_FILE).read_text() == str(os.getpid())
        err = cli_fails(["clip", "--out", str(out), *TINY], "is in use by PID")
        assert str(os.getpid()) in err
        assert (out / "kept.txt").exists() and (out / LOCK_FILE).exists()
    assert not (out / LOCK_FILE).exists()   # released with the block
    with run_lock(out):   # and free again
        pass


def test_an_out_that_is_a_file_is_one_line(tmp_path, cli_fails):
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    cli_fails(["clip", "--out", str(target), *TINY], "give another --out")
    assert target.read_text() == "not a folder"
    cli_fails(["clip", "--out", str(target / "run"), *TINY], "give another --out")


def test_a_run_that_fails_on_its_inputs_leaves_no_record_that_refuses_the_corrected_one(tmp_path, cli_fails):
    out = tmp_path / "run"
    out.mkdir()   # an existing folder: the failed run must not delete it, only what it wrote
    (out / "notes.txt").write_text("mine")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"")
    # uc records its config (checkpoints/fingerprint.json) before it loads the data
    cli_fails(["uc", "--out", str(out), "--dataset", f"npz:{broken}", "--no-progress"], "not a readable .npz")
    assert not (out / "checkpoints").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_a_corrupt_fingerprint_is_one_line_and_restart_clears_it(tmp_path, cli_fails):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "fingerprint.json").write_text('{"train.lr": 0.1')   # cut short mid-write
    cli_fails(["clip", "--out", str(out), *TINY], "is corrupt")
    assert main(["clip", "--out", str(out), "--restart", *TINY]) == 0
    assert json.loads((out / "checkpoints" / "fingerprint.json").read_text())["train.steps"] == 4


def test_a_finished_clip_run_is_not_reported_under_another_config(tmp_path, cli_fails):
    out = tmp_path / "run"
    assert main(["clip", "--out", str(out), *TINY]) == 0
    # before: exit 0 in 0.1 s with the first model's metrics under the new learning rate
    cli_fails(["clip", "--out", str(out), *TINY, "--set", "train.lr=0.01"], "holds a run with train.lr")
    cli_fails(["clip", "--out", str(out), *TINY, "--seed", "3"], "holds a run with seed")


def test_a_read_only_out_is_one_line(tmp_path, cli_fails, monkeypatch):
    # root (containers, CI) writes through chmod, so the read-only filesystem's error is raised directly
    out = tmp_path / "run"
    out.mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise OSError(30, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    cli_fails(["clip", "--out", str(out), *TINY], "cannot write in the run folder")
