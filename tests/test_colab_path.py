"""The colab path, without Colab: each notebook top to bottom in the ``colab`` profile, on CPU.

What a Colab user's run does, this test does, offline:

- every download goes to a local HTTP server (``$OBSTRUCT_MIRROR``) that serves tiny archives in
  the real formats (:mod:`colab_fixtures`), through the package's own fetchers (the data cells call
  ``ob.data.ensure_dataset``); an IPython startup file gives the fetchers the fixtures' checksums;
- the pretrained tags of ``colab`` (``openai``) resolve to a tiny local open_clip checkpoint, and
  every size shrinks, through the one documented environment override ``$OBSTRUCT_SET`` (the
  notebooks' own ``config_for`` calls and the CLI runs they start both read it);
- the data root is ``$OBSTRUCT_DATA`` (the notebooks' ``DATA_ROOT = None``), and ``MPLBACKEND`` is
  unset, so every figure renders as it would in a reader's kernel.

Only the Parameters cell is edited (``PROFILE = "colab"``, ``DEVICE = "cpu"`` and, where a notebook
has them, its own size knobs), as papermill would. Marked ``slow``: part of ``make test``.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# Parameters edited per notebook, besides PROFILE and DEVICE (the notebooks' own size knobs).
PARAMS: dict[str, dict[str, str]] = {
    "00_setup_and_tour.ipynb": {},
    "02_multimodal_unlearnable_examples.ipynb": {"NUM_HACKERS": "2"},
    "04_non_transferable_pruning.ipynb": {},
    "01_unlearnable_clusters.ipynb": {"PROGRESS": "False"},
    "03_backdoor_unlearning_ubt.ipynb": {"SSBA_STEPS": "2", "CURVE_IMAGES": "16", "ROCLIP": "False"},
    "05_learning_to_obstruct.ipynb": {},
}


# What each notebook's data cell fetches in colab (folders under the data root).
FETCHED = {
    "00_setup_and_tour.ipynb": ["flickr8k/images"],
    "01_unlearnable_clusters.ipynb": ["cifar-10-batches-py"],
    "02_multimodal_unlearnable_examples.ipynb": ["flickr8k/images"],
    "03_backdoor_unlearning_ubt.ipynb": ["flickr8k/images"],
    "04_non_transferable_pruning.ipynb": ["MNIST/raw", "usps"],
    "05_learning_to_obstruct.ipynb": ["cifar-10-batches-py"],
}


def shrink(ckpt: Path) -> dict[str, list[str]]:
    """``$OBSTRUCT_SET``: the colab recipes at smoke size, with the tiny checkpoint for every pretrained tag."""
    clip_train = ["train.steps=4", "train.batch_size=16", "train.warmup_steps=0", "train.num_workers=0",
                  "train.log_every=1"]
    return {
        "clip": ["arch=tiny-vit", f"pretrained={ckpt}", "image_size=32", "max_train_samples=48",
                 "max_test_samples=16", *clip_train],
        "mem": ["surrogate=tiny-vit", "hacker=tiny-vit", f"hacker_pretrained={ckpt}", "image_size=32",
                "max_train_samples=48", "max_test_samples=16", "mem.rounds=1", "mem.text_rounds=1",
                "mem.train_steps=2", "mem.pgd_steps=2", "mem.num_candidates=2", "mem.batch_size=16",
                "mem.surrogate.steps=2", "mem.surrogate.batch_size=16", "em.rounds=1", "em.train_steps=2",
                "em.pgd_steps=2", "em.batch_size=16", "em.surrogate.steps=2", "em.surrogate.batch_size=16",
                "tap.steps=2", "tap.batch_size=16", *clip_train],
        "uc": ["surrogate=clip:tiny-vit", "clip_surrogate=clip:tiny-vit", "uc.surrogate=clip:tiny-vit",
               f"uc.surrogate_pretrained={ckpt}", "uc.surrogate_image_size=32", "max_train_samples=100",
               "max_test_samples=50", "uc.epochs=1", "uc.batch_size=32", "em.steps=2", "em.train_steps=2",
               "em.max_rounds=1", "em.batch_size=32", "tap.steps=2", "tap.batch_size=32", "adv.steps=1",
               "train.epochs=1", "train.batch_size=32", "train.num_workers=0", "train.eval_batch_size=64",
               "target_model=resnet20", "protector_model=resnet20"],
        "ubt": ["arch=tiny-vit", f"pretrained={ckpt}", "image_size=32", "train_samples=40", "heldout_samples=8",
                "test_samples=16", "victim.epochs=1", "victim.batch_size=16", "victim.warmup_steps=0",
                "attack.trojvqa_steps=2", "attack.ssba.steps=2", "attack.ssba.batch_size=8",
                "ubt.pool_count=4", "ubt.overfit.epochs=1", "ubt.overfit.batch_size=8", "ubt.ig_steps=2",
                "ubt.unlearn.epochs=1", "ubt.unlearn.batch_size=8", "ft.epochs=1", "ft.batch_size=16",
                "cleanclip.train.epochs=1", "cleanclip.train.batch_size=16", "cleanclip.train.warmup_steps=0",
                "roclip.train.epochs=1", "roclip.train.batch_size=16", "roclip.train.warmup_steps=0",
                "roclip.pool_size=16", "abl.train.epochs=1", "abl.train.batch_size=16"],
        "lto": ["arch=tiny-vit", f"pretrained={ckpt}", "image_size=32",
                "test_samples=40", "lto.steps=2", "lto.eval_every=1", "lto.obs_batch=16", "attack.epochs=1",
                "defender.epochs=1", "classical_arch=resnet12",
                "classical_pretrain.epochs=1", "episodic_defender.epochs=1", "episodic_attacker.epochs=1"],
        "ntp": ["arch=digits_cnn", "image_size=16", "max_source_train=200", "max_target_train=100",
                "max_test=60", "ratios=0.1,1.0", "source_train.epochs=1", "curve.epochs=1",
                "source_finetune.epochs=1", "ntp.epochs=1", "ntp.head_epochs=1", "ntp.batch_size=32",
                "ntl.epochs=1", "simclr.epochs=1"],
    }


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    """The mirror, its server, the IPython startup file and the tiny checkpoint; yields the environment."""
    from colab_fixtures import build_mirror, write_tiny_clip

    base = tmp_path_factory.mktemp("colab")
    mirror = base / "mirror"
    build_mirror(mirror)
    startup = base / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-fixture-checksums.py").write_text((mirror / "patch_checksums.py").read_text())
    ckpt = write_tiny_clip(base / "weights" / "tiny-vit.pt")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(mirror)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    env = {
        "OBSTRUCT_MIRROR": f"http://127.0.0.1:{server.server_address[1]}",
        "OBSTRUCT_DOWNLOAD": "1",
        "OBSTRUCT_DATA": str(base / "data"),
        "OBSTRUCT_SET": json.dumps(shrink(ckpt)),
        "OBSTRUCT_PROFILE": "colab",
        "IPYTHONDIR": str(base / "ipython"),
    }
    yield base, env
    server.shutdown()
    server.server_close()


def _parameters(source: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        source, n = re.subn(rf"^{key}\s*=.*$", f"{key} = {value}", source, count=1, flags=re.MULTILINE)
        assert n == 1, f"the Parameters cell has no {key}"
    return source


def run_in_colab_profile(name, colab_env, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    base, env = colab_env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Parameters"))
    params.source = _parameters(params.source, {"PROFILE": '"colab"', "DEVICE": '"cpu"', **PARAMS[name]})
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was rendered"
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "profile colab" in text, "the notebook did not run in the colab profile"
    for folder in FETCHED[name]:  # fetched from the mirror by the data cell, in the layout the loaders read
        assert (Path(env["OBSTRUCT_DATA"]) / folder).is_dir(), folder


# One class per notebook: `make test` distributes by scope (pytest-xdist --dist loadscope), so the six
# notebooks spread over the workers instead of queueing on one.
def _test_class(name: str) -> type:
    def test_runs_top_to_bottom(self, colab_env, monkeypatch, tmp_path):
        run_in_colab_profile(name, colab_env, monkeypatch, tmp_path)

    return type(f"TestColab{name[:2]}", (), {"test_runs_top_to_bottom": test_runs_top_to_bottom, "notebook": name})


for _name in sorted(PARAMS):
    globals()[f"TestColab{_name[:2]}"] = _test_class(_name)
