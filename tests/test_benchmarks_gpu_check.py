"""benchmarks/gpu_check.sh runs once on a lent GPU, so its mistakes must show up here first."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_runs_only_scripts_that_exist():
    """Each benchmarks/*.py the script names exists, or the script checks for it before use."""
    text = SCRIPT.read_text()
    paths = set(re.findall(r"benchmarks/\w+\.py", text))
    assert "benchmarks/clip_throughput.py" in paths
    missing = [p for p in paths if not (ROOT / p).is_file() and f"[[ -f {p} ]]" not in text]
    assert missing == []


def test_clip_throughput_records_compile_attention_and_memory(tmp_path):
    spec = importlib.util.spec_from_file_location("clip_throughput", ROOT / "benchmarks" / "clip_throughput.py")
    assert spec is not None and spec.loader is not None
    clip_throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clip_throughput)
    out = tmp_path / "bench.jsonl"
    argv = ["--arch", "tiny-vit", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--device", "cpu"]
    assert clip_throughput.main([*argv, "--flops", "yes", "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["compiled"] is False and record["compile_s"] is None and record["compile_error"] is None
    assert record["peak_mem_gib"] is None  # CPU
    assert record["attention"] == "nn.MultiheadAttention (SDPA)"
    assert record["sdpa_kernels"] and all("_scaled_dot_product" in k for k in record["sdpa_kernels"])
    assert record["flops_per_step"] > 0 and record["images_per_s"] > 0  # the old fields are still there
