"""A careful user's probe set (issue: reliability): bad input to every runner exits 2 with one line
that says what to do, and a run folder the probe created is gone afterwards.

Each probe fails at configuration or input time, so the set runs in seconds. The classes:
non-finite or meaningless values, values that used to reach torch as tracebacks, contradictory
flags, and broken data files. (Damaged state files: ``test_corrupt_state.py``; busy, file-valued
and mismatched run folders: ``test_cli.py``; NaN results: ``test_nonfinite.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_data import write_npz
from PIL import Image

CONFIG_PROBES = {
    # non-finite and meaningless values
    "nan lr": (["ntp", "--set", "ntp.lr=nan"], "finite"),
    "inf alpha": (["ntp", "--set", "ntp.alpha=inf"], "finite"),
    "nan ratios": (["ntp", "--set", "ratios=nan,1.0"], "finite"),
    "nan log base": (["ntp", "--set", "log_base=nan"], "finite"),
    "nan grad clip": (["mem", "--set", "train.grad_clip=nan"], "finite"),
    "negative grad clip": (["clip", "--set", "train.grad_clip=-1"], "grad_clip"),
    "three betas": (["clip", "--set", "train.betas=0.9,0.99,0.9"], "give 2"),
    "one beta": (["clip", "--set", "train.betas=0.9"], "give 2"),
    "empty out": (["clip", "--out", ""], "--out is empty"),
    "flag against set": (["uc", "--method", "uc", "--set", "method=random"], "give one"),
    # values that reached torch as tracebacks
    "negative eps": (["clip", "--set", "train.eps=-1"], "eps"),
    "negative weight decay": (["clip", "--set", "train.weight_decay=-1"], "weight_decay"),
    "negative momentum": (["uc", "--set", "target.train.momentum=-1"], "momentum"),
    "negative label seed": (["uc", "--set", "label_seed=-1"], "a seed is an integer"),
    "huge seed": (["clip", "--seed", "12345678901234567890123"], "--seed"),
    "negative seed": (["uc", "--seed", "-1"], "--seed"),
    "zero batch": (["clip", "--set", "train.batch_size=0"], "batch_size"),
    "unknown key": (["mem", "--set", "nope=1"], "unknown key"),
    "not a number": (["ubt", "--set", "attack.poison_rate=lots"], "expected a number"),
}


@pytest.mark.parametrize("argv, words", list(CONFIG_PROBES.values()), ids=list(CONFIG_PROBES))
def test_config_probe(argv, words, tmp_path, cli_fails):
    out = tmp_path / "run"
    argv = argv if "--out" in argv else [*argv, "--out", str(out)]
    cli_fails([*argv, "--no-progress", "--data-root", str(tmp_path / "data")], words)
    assert not out.exists()


def _caption_csv(folder, rows, good=10):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    body = [f"{i}.png,a photo number {i}" for i in range(good)] + list(rows)
    (folder / "pairs.csv").write_text("image,caption\n" + "".join(f"{r}\n" for r in body))
    return folder / "pairs.csv"


def _data_probes(tmp_path):
    empty_test = tmp_path / "empty_test.npz"
    write_npz(empty_test, x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.int64))
    negative = tmp_path / "negative.npz"
    write_npz(negative, y_train=np.full(20, -1, np.int64))
    one_class = tmp_path / "one_class.npz"
    write_npz(one_class, y_train=np.zeros(20, np.int64), y_test=np.zeros(10, np.int64))
    broken_image = _caption_csv(tmp_path / "broken", ["b.png,another photo"])
    (tmp_path / "broken" / "b.png").write_bytes(b"not a png")
    latin1 = tmp_path / "latin1"
    latin1_csv = _caption_csv(latin1, [])
    latin1_csv.write_bytes("image,caption\n0.png,caf\xe9 au lait\n".encode("latin-1"))
    captions = _caption_csv(tmp_path / "captions", [])
    return {
        "npz with an empty test split": (["ntp", "--set", f"source=npz:{empty_test}"], "empty"),
        "npz with labels of -1": (["uc", "--dataset", f"npz:{negative}"], "label"),
        "one-class dataset": (["uc", "--dataset", f"npz:{one_class}"], "class"),
        "csv with an undecodable image": (["clip", "--dataset", f"csv:{broken_image}", "--set", "train.batch_size=2",
                                           "--set", "train.steps=2"], "b.png: cannot decode"),
        "csv that is not UTF-8": (["clip", "--dataset", f"csv:{latin1_csv}"], "UTF-8"),
        "caption csv given to uc": (["uc", "--dataset", f"csv:{captions}"], "caption"),
    }


@pytest.mark.parametrize("name", ["npz with an empty test split", "npz with labels of -1", "one-class dataset",
                                  "csv with an undecodable image", "csv that is not UTF-8",
                                  "caption csv given to uc"])
def test_data_probe(name, tmp_path, cli_fails):
    argv, words = _data_probes(tmp_path)[name]
    out = tmp_path / "run"
    cli_fails([*argv, "--out", str(out), "--no-progress"], words)
    assert not out.exists()
