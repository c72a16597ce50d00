"""Protection passes against the model work their schedules need: wall time over ideal time.

Every protection is a schedule of model evaluations: MEM's rounds of surrogate steps, PGD steps
and HotFlip searches; EM's rounds; UC's generator steps; NTP's ADMM steps; UBT's stages; LTO's
outer steps. For each one, a builder (``build(scale, device)``) returns a :class:`Pass`:

- ``run``: the whole pass, through the library's public function, at a small schedule;
- ``work``: the kinds of model work that schedule needs, each with its COUNT (read off the
  config, the way the paper states the schedule) and a closure doing ONE unit of it on the same
  model and batch (one surrogate AdamW step, one PGD step through the frozen model, one forward);
- ``train_step``: one training step of the same model and batch.

:func:`measure` runs the pass once and times each kind of work alone (median of repeats), then

    ratio       = wall time of the pass / sum(count x time of one unit)
    ratio_steps = wall time of the pass / (passes x time of one training step)

``ratio`` is what the pass spends beyond its model work (data, the noise store, Python,
bookkeeping, work the schedule does not need); the aim is at most 1.2. ``ratio_steps`` is the
coarser figure with every forward+backward counted as one training step and a forward alone as a
third of one (the usual 1:2 split of forward and backward FLOPs); a pass whose units are cheaper
than a training step (a PGD step writes no weight gradients) reads below 1 there.

Scales: ``smoke`` (seconds, the tests run it so nothing here can rot), ``cpu`` (the quick
profile's models and recipe, a shortened schedule, tens of seconds per pass on 2 cores) and
``gpu`` (the colab profile's models at 224 px on synthetic data, one short round: proves the GPU
path runs and records peak memory).

Usage: ``python -m benchmarks mem em tap --scale cpu`` (see ``benchmarks/__main__.py``).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

SCALES = ("smoke", "cpu", "gpu")
FORWARD = 1 / 3  # a forward alone, in forward+backward passes

# pass name -> "module:function" building it (modules in this folder; imported on use)
PASSES: dict[str, str] = {
    "mem": "benchmarks.pass_mem:mem",
    "mem-em": "benchmarks.pass_mem:mem_em",
    "em": "benchmarks.pass_mem:em",
    "tap": "benchmarks.pass_mem:tap",
    "uc": "benchmarks.pass_uc_ntp:uc",
    "ntp": "benchmarks.pass_uc_ntp:ntp",
    "ubt": "benchmarks.pass_ubt_lto:ubt",
    "lto": "benchmarks.pass_ubt_lto:lto",
}


@dataclass
class Work:
    """One kind of model work a schedule needs.

    Attributes:
        what: what one unit is, e.g. ``"surrogate AdamW step, batch 64"``.
        count: how many units the schedule needs.
        fn: does one unit on the same model and batch as the pass.
        passes: forward+backward passes one unit is worth (a forward alone: :data:`FORWARD`).
    """

    what: str
    count: float
    fn: Callable[[], Any]
    passes: float = 1.0


@dataclass
class Pass:
    """A protection pass to measure (see the module docstring)."""

    name: str
    schedule: str
    run: Callable[[], Any]
    work: list[Work]
    train_step: Callable[[], Any]
    setting: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (after one untimed call)."""
    fn()
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(name: str, scale: str, device: torch.device) -> Pass:
    """The :class:`Pass` named ``name`` at ``scale``."""
    if name not in PASSES:
        raise SystemExit(f"unknown pass {name!r}: use one of {', '.join(PASSES)}")
    if scale not in SCALES:
        raise SystemExit(f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
    module, func = PASSES[name].split(":")
    return getattr(importlib.import_module(module), func)(scale, device)


def measure(p: Pass, device: torch.device, repeats: int) -> dict[str, Any]:
    """Run ``p`` once and time each kind of its work alone; the JSON record of the ratios."""
    for w in p.work:  # warm every kernel once, so the pass is not charged for first-call costs
        w.fn()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    p.run()
    sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    units = [{"what": w.what, "count": w.count, "ms": 1000 * time_call(w.fn, device, repeats), "passes": w.passes}
             for w in p.work]
    ideal = sum(u["count"] * u["ms"] for u in units) / 1000
    step_s = time_call(p.train_step, device, repeats)
    passes = sum(u["count"] * u["passes"] for u in units)
    return {
        "bench": "pass",
        "name": p.name,
        "schedule": p.schedule,
        "setting": p.setting,
        "wall_s": round(wall, 4),
        "ideal_s": round(ideal, 4),
        "ratio": round(wall / ideal, 3) if ideal > 0 else None,
        "passes": round(passes, 2),
        "train_step_ms": round(1000 * step_s, 3),
        "ratio_steps": round(wall / (passes * step_s), 3) if passes and step_s > 0 else None,
        "work": [{**u, "ms": round(u["ms"], 3)} for u in units],
        "peak_mem_gib": None if peak is None else round(peak, 3),
        "note": p.note,
        **environment(device),
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Where a record was measured."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def finite(record: dict[str, Any]) -> bool:
    """True when every ratio of a record is a positive finite number (what the smoke test checks)."""
    return all(isinstance(record[k], float) and math.isfinite(record[k]) and record[k] > 0
               for k in ("wall_s", "ideal_s", "ratio", "ratio_steps"))


def clip_train_step(model: torch.nn.Module, cfg: Any, images: torch.Tensor, tokens: torch.Tensor) -> Callable[[], None]:
    """One training step of a CLIP on a fixed batch, exactly as ``fit_clip`` runs it (the engine's own
    step: autocast, contrastive loss, backward, AdamW, temperature clamp; a constant learning rate)."""
    from obstructlib.engine import grad_scaler
    from obstructlib.engine.clip import _train_step, clip_adamw

    opt = clip_adamw(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    scaler = grad_scaler(images.device, cfg.amp)

    def step() -> None:
        model.train()
        _train_step(model, model, (images, tokens), opt, scheduler, scaler, cfg, images.device)
        model.eval()

    return step


def with_fields(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that keeps the call sites short."""
    return dataclasses.replace(cfg, **changes)
