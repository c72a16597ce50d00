"""Two gloo processes on CPU train exactly like one process on the same global batches.

Each run is a fresh Python process (launched like torchrun: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), so the test also covers ``init_distributed`` from the environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist

from obstructlib.engine import DistInfo, all_gather_with_grad, init_distributed, is_main_process, unwrap

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, math, os, sys
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.set_num_threads(1)
    import obstructlib.engine.loop as loop_mod
    from obstructlib.engine import (ClassifierTrainConfig, ClipTrainConfig, cleanup, fit_classifier, fit_clip,
                                    init_distributed, seed_everything)

    out = sys.argv[1]
    info = init_distributed()
    saves = {"clip": 0, "classifier": 0}

    trainer = ["clip"]  # which fit_* is running: every trainer saves through engine.loop

    def counting(real):
        def save(*args, **kwargs):
            saves[trainer[0]] += 1
            return real(*args, **kwargs)
        return save

    loop_mod.save_checkpoint = counting(loop_mod.save_checkpoint)

    class TinyClip(nn.Module):  # ClipModel's interface, no dropout (ranks draw different masks)
        def __init__(self):
            super().__init__()
            self.visual = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.GELU(), nn.Linear(16, 8))
            self.token_embedding = nn.Embedding(20, 8)
            self.ln_final = nn.LayerNorm(8)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

        def tokenize(self, texts):
            return torch.tensor([[1 + sum(map(ord, w)) % 19 for w in t.split()][:3] for t in texts])

        def encode_image(self, x, normalize=True):
            return F.normalize(self.visual(x), dim=-1)

        def encode_text(self, tokens, normalize=True):
            return F.normalize(self.ln_final(self.token_embedding(tokens).mean(1)), dim=-1)

        def forward(self, images, tokens):
            return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 4, 4, generator=g)
    words = ["red", "green", "blue", "cyan", "pink"]
    pairs = [(images[i], f"a {words[i % 5]} {words[(i // 5) % 5]}", i) for i in range(40)]
    labels = (images.mean((1, 2, 3)) > 0.5).long()
    labelled = torch.utils.data.TensorDataset(images, labels)

    seed_everything(0)
    clip = TinyClip()
    clip_cfg = ClipTrainConfig(steps=8, batch_size=8, lr=5e-3, warmup_steps=2, log_every=1, ckpt_every=3)
    clip_hist = fit_clip(clip, pairs, clip_cfg, "cpu", ckpt_dir=os.path.join(out, "clip_ckpt"), progress=False)

    seed_everything(0)
    trainer[0] = "classifier"
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    cls_cfg = ClassifierTrainConfig(epochs=3, batch_size=8, lr=0.1)
    cls_hist = fit_classifier(net, labelled, labelled, cls_cfg, "cpu", ckpt_dir=os.path.join(out, "cls_ckpt"),
                              progress=False)
    result = {
        "rank": info.rank, "world": info.world_size, "saves": saves, "clip": clip_hist, "classifier": cls_hist,
        "clip_params": [p.detach().flatten().tolist() for p in clip.parameters()],
        "cls_params": [p.detach().flatten().tolist() for p in net.parameters()],
    }
    with open(os.path.join(out, f"result_rank{info.rank}_of{info.world_size}.json"), "w") as f:
        json.dump(result, f)
    cleanup()
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: Path, out: Path, world: int) -> list[subprocess.Popen]:
    out.mkdir()
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        if world > 1:  # what torchrun sets; the single-process run gets none of it
            env.update(
                RANK=str(rank),
                WORLD_SIZE=str(world),
                LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
        else:
            for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
                env.pop(key, None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(out)],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float = 150.0) -> None:
    try:
        for p in procs:
            output, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, output[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _close(a: list, b: list, atol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= atol for x, y in zip(a, b))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = _launch(script, tmp_path / "one", 1) + _launch(script, tmp_path / "two", 2)
    _wait(procs)
    one = json.loads((tmp_path / "one" / "result_rank0_of1.json").read_text())
    ranks = [json.loads((tmp_path / "two" / f"result_rank{r}_of2.json").read_text()) for r in range(2)]

    for res in ranks:
        assert res["world"] == 2
        assert res["clip"]["step"] == one["clip"]["step"] == list(range(1, 9))
        assert _close(res["clip"]["loss"], one["clip"]["loss"]), (res["clip"]["loss"], one["clip"]["loss"])
        assert _close(res["clip"]["logit_scale"], one["clip"]["logit_scale"])
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert _close(res["classifier"][key], one["classifier"][key]), (
                key,
                res["classifier"][key],
                one["classifier"][key],
            )
        for name in ("clip_params", "cls_params"):
            flat = [x for p in res[name] for x in p]
            ref = [x for p in one[name] for x in p]
            assert _close(flat, ref, atol=1e-4)
    # rank 0 wrote every checkpoint (clip: steps 3, 6, 8; classifier: 3 epochs), rank 1 none
    assert ranks[0]["saves"] == {"clip": 3, "classifier": 3} == one["saves"]
    assert ranks[1]["saves"] == {"clip": 0, "classifier": 0}
    assert sorted(os.listdir(tmp_path / "two")) == [
        "clip_ckpt",
        "cls_ckpt",
        "result_rank0_of2.json",
        "result_rank1_of2.json",
    ]


def test_single_process_helpers_are_noops(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert init_distributed() == DistInfo(rank=0, world_size=1, local_rank=0, is_main=True)
    assert is_main_process()
    import torch

    t = torch.arange(3.0)
    assert all_gather_with_grad(t) is t
    m = torch.nn.Linear(2, 2)
    assert unwrap(torch.nn.DataParallel(m)) is m and unwrap(m) is m
