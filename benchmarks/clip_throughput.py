"""CLIP training-step throughput (images/s) and, with a FLOP count, achieved TFLOP/s and MFU.

One "step" is exactly what ``obstructlib.engine.fit_clip`` does per batch: forward both towers
under the engine's autocast (bf16 on Ampere+ GPUs, fp16 with loss scaling on older ones, full
precision on CPU), the symmetric contrastive loss, backward, AdamW step and the logit-scale clamp.
Inputs are synthetic (random images in [0, 1], short captions), so no data loading is timed.

FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, forward and backward; the optimizer's element-wise work is not counted), and
MFU = achieved FLOP/s / the card's dense bf16 (fp16 where bf16 is missing) tensor-core peak.

``--compile`` runs the forward pass through ``torch.compile`` (default mode); the first step, which
compiles, is untimed and reported as ``compile_s``. A compile that fails (no C++ compiler on CPU, an
unsupported op) is one line on stderr and in the record's ``compile_error``, and the eager model is
timed instead (``compiled: false``). FLOPs are always counted on the eager model.

Attention: open_clip 3.x has no fused-attention switch. Its default ``ResidualAttentionBlock`` uses
``nn.MultiheadAttention``, whose training path (``need_weights=False``) calls
``F.scaled_dot_product_attention``; the ``custom`` block calls SDPA directly. So SDPA is always in use,
and the record names the SDPA kernels (``sdpa_kernels``: flash, memory-efficient, cuDNN or math) that
one profiled, untimed step dispatched to. ``peak_mem_gib`` is the CUDA allocator's peak over the timed
steps (null on CPU).

Usage:
    python benchmarks/clip_throughput.py --arch tiny-vit --batch-size 64 --device cpu
    python benchmarks/clip_throughput.py --arch ViT-B-32 --batch-size 256 --device cuda --out bench.jsonl
    python benchmarks/clip_throughput.py --arch ViT-B-32 --batch-size 256 --device cuda --compile

Prints one JSON line (and appends it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from obstructlib.engine import (
    ClipTrainConfig,
    amp_dtype,
    autocast,
    clip_loss,
    grad_scaler,
    resolve_device,
    seed_everything,
)
from obstructlib.engine.clip import clip_adamw
from obstructlib.models import create_clip

# Dense (no sparsity) tensor-core peaks in TFLOP/s for the autocast dtype the engine uses on
# each card, from NVIDIA's data sheets. Matched by substring of torch.cuda.get_device_name();
# the first match wins, so more specific names come first.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),  # bf16
    ("H100", 989.4),  # SXM / HBM3, bf16
    ("H200", 989.4),  # bf16, same compute as H100 SXM
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),  # bf16
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),  # AWS variant of the A10
    ("A10", 125.0),
    ("RTX 4090", 165.2),  # fp16/bf16 with fp32 accumulate
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 (no bf16 on Volta)
    ("T4", 65.0),  # fp16 (no bf16 on Turing)
]


def peak_tflops(device: torch.device) -> float | None:
    """The card's dense tensor-core peak in TFLOP/s, or None for CPUs and unknown cards."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key.lower() in name.lower()), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device, amp: bool, lr: float, forward=None):
    """A closure running one full training step on a fixed batch.

    ``forward`` (default: ``model``) computes the features, e.g. ``torch.compile(model)``; the
    optimizer and the logit-scale clamp always act on ``model``'s own parameters.
    """
    forward = model if forward is None else forward
    optimizer = clip_adamw(model, ClipTrainConfig(lr=lr))
    scaler = grad_scaler(device, amp)
    max_log_scale = math.log(100.0)

    def step(images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with autocast(device, enabled=amp):
            image_features, text_features, scale = forward(images, tokens)
        loss = clip_loss(image_features.float(), text_features.float(), scale.float())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
        return loss.detach()

    return step


def count_step_flops(step, images: torch.Tensor, tokens: torch.Tensor) -> int:
    """FLOPs of one training step (forward + backward) counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(images, tokens)
    return int(counter.get_total_flops())


def attention_kind(model: torch.nn.Module) -> str:
    """Which attention modules the model uses; all of them reach ``F.scaled_dot_product_attention``."""
    from open_clip.transformer import Attention

    kinds = sorted(
        {
            "nn.MultiheadAttention" if isinstance(m, torch.nn.MultiheadAttention) else "open_clip Attention"
            for m in model.modules()
            if isinstance(m, (torch.nn.MultiheadAttention, Attention))
        }
    )
    return f"{' + '.join(kinds)} (SDPA)" if kinds else "none found (SDPA not used by a transformer block)"


def sdpa_kernels(step, images: torch.Tensor, tokens: torch.Tensor) -> list[str]:
    """The aten SDPA kernels (flash, efficient, cudnn, math, ...) one profiled step dispatches to."""
    from torch.profiler import ProfilerActivity, profile

    # kineto's stage/USDT chatter on stderr; read when the profiler first starts (6: nothing)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # aten ops are recorded on the CPU side
        step(images, tokens)
    # the backend ops (aten::_scaled_dot_product_{flash,efficient,cudnn}_attention, ..._math), not the
    # public wrapper aten::scaled_dot_product_attention nor the backward ops
    return sorted({e.key for e in prof.key_averages() if "_scaled_dot_product" in e.key and "backward" not in e.key})


def compile_first_step(model: torch.nn.Module, device: torch.device, amp: bool, lr: float, images, tokens):
    """Build a step on ``torch.compile(model)`` and run its first (compiling) step.

    Returns:
        ``(step, seconds of the first step, None)``, or ``(None, None, one-line error)`` when
        compilation fails.
    """
    step = make_step(model, device, amp, lr, forward=torch.compile(model))
    _sync(device)
    start = time.perf_counter()
    try:
        step(images, tokens)
        _sync(device)
    except Exception as e:  # any compiler failure (inductor, missing C++ compiler) is reported; eager is timed
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return None, None, f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    return step, time.perf_counter() - start, None


def benchmark(
    arch: str,
    batch_size: int,
    device: torch.device,
    *,
    steps: int,
    warmup: int,
    amp: bool,
    image_size: int | None,
    flops: bool,
    compile_model: bool = False,
    lr: float = 5e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup`` untimed ones; return the result record.

    With ``compile_model``, the forward pass runs through ``torch.compile`` and the compiling first step
    is untimed (``compile_s``); if compilation fails the eager step is timed (``compile_error``).
    """
    seed_everything(seed)
    model = create_clip(arch, device=device, **({"image_size": image_size} if image_size else {}))
    model.train()
    size = model.image_size if isinstance(model.image_size, int) else model.image_size[0]
    images = torch.rand(batch_size, 3, size, size, device=device)
    captions = [
        f"a photo of object number {i} in a {['red', 'green', 'blue'][i % 3]} scene"
        for i in range(batch_size)
    ]
    tokens = model.tokenize(captions).to(device)
    step = make_step(model, device, amp, lr)

    step_flops = count_step_flops(step, images, tokens) if flops else None
    compile_s = compile_error = None
    if compile_model:
        compiled_step, compile_s, compile_error = compile_first_step(model, device, amp, lr, images, tokens)
        if compiled_step is None:
            print(f"clip_throughput: torch.compile failed, timing eager instead: {compile_error}", file=sys.stderr)
        step = compiled_step or step
    for _ in range(warmup):
        step(images, tokens)
    kernels = sdpa_kernels(step, images, tokens)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(images, tokens)
    _sync(device)
    elapsed = time.perf_counter() - start
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    step_s = elapsed / steps
    achieved = step_flops / step_s / 1e12 if step_flops else None
    peak = peak_tflops(device)
    dtype = amp_dtype(device) if amp else None
    return {
        "arch": arch,
        "batch_size": batch_size,
        "image_size": size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "float32",
        "steps": steps,
        "warmup": warmup,
        "step_time_ms": 1000.0 * step_s,
        "images_per_s": batch_size / step_s,
        "flops_per_step": step_flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if achieved is not None and peak else None,
        "final_loss": float(loss),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "compiled": compile_model and compile_error is None,
        "compile_s": compile_s,
        "compile_error": compile_error,
        "attention": attention_kind(model),
        "sdpa_kernels": kernels,
        "peak_mem_gib": peak_mem,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", default="tiny-vit", help="tiny-vit, tiny-rn or an open_clip name (ViT-B-32, RN50)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps first (allocator, cuDNN autotune)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="override the model's input size (pixels)"
    )
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA too")
    parser.add_argument(
        "--flops", choices=("auto", "yes", "no"), default="auto", help="count FLOPs (auto: on CUDA only)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (first, compiling step untimed: compile_s)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    flops = args.flops == "yes" or (args.flops == "auto" and device.type == "cuda")
    result = benchmark(
        args.arch,
        args.batch_size,
        device,
        steps=args.steps,
        warmup=args.warmup,
        amp=not args.no_amp,
        image_size=args.image_size,
        flops=flops,
        compile_model=args.compile,
    )
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
