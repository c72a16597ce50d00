"""Test-wide settings: CPU only, offline, quiet, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OBSTRUCT_PROFILE", "quick")
# No test reaches the network by accident: loaders do not fetch a missing dataset on first use.
os.environ.setdefault("OBSTRUCT_DOWNLOAD", "0")
# CPU only, as open_clip's tests do: a GPU on the test machine changes neither defaults nor results.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import matplotlib
import pytest
import torch

# Agg for this process only: MPLBACKEND is not set, so the notebook kernels nbval starts (they inherit
# the environment) keep their inline backend and render every figure, as a reader's kernel does.
matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models run faster with it, and far faster on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_fails(capsys):
    """``cli_fails(argv, words)``: run ``obstruct argv``; assert exit 2 and ONE stderr line containing ``words``."""
    from obstructlib.cli import main

    def run(argv, words):
        status = main(list(argv))
        err = capsys.readouterr().err.strip()
        assert status == 2, err
        assert len(err.splitlines()) == 1 and words in err, err
        return err

    return run
