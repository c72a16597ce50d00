"""Training and evaluation loops, checkpoints, seeding, autocast and distributed helpers.

- :mod:`~obstructlib.engine.utils`: ``seed_everything``, ``resolve_device``, ``autocast`` (the
  one AMP helper: bf16 on CUDA, a no-op on CPU), RNG snapshots, ``count_parameters``.
- :mod:`~obstructlib.engine.loop`: ``ResumableLoop``, the one resumable loop skeleton every
  trainer uses (checkpoint after a unit, resume, stop on request, main process only).
- :mod:`~obstructlib.engine.checkpoint`: atomic ``save_checkpoint``/``load_checkpoint``
  (safetensors weights + a ``weights_only``-loadable state file).
- :mod:`~obstructlib.engine.classifier`: ``train_one_epoch``, ``evaluate``, ``fit_classifier``.
- :mod:`~obstructlib.engine.clip`: ``clip_loss``, ``fit_clip``; :mod:`~obstructlib.engine.clip_eval`:
  ``encode_dataset``, ``evaluate_clip``.
- :mod:`~obstructlib.engine.distributed`: ``torchrun`` helpers (no-ops in a single process).
"""

from obstructlib.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from obstructlib.engine.classifier import ClassifierTrainConfig, evaluate, fit_classifier, train_one_epoch
from obstructlib.engine.clip import ClipTrainConfig, clip_loss, fit_clip
from obstructlib.engine.clip_eval import encode_dataset, evaluate_clip
from obstructlib.engine.distributed import (
    DistInfo,
    all_gather_with_grad,
    barrier,
    cleanup,
    epoch_loader,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    unwrap,
)
from obstructlib.engine.fingerprint import check_fingerprint, fingerprint, state_digest
from obstructlib.engine.loop import ResumableLoop
from obstructlib.engine.utils import (
    amp_dtype,
    autocast,
    count_parameters,
    cpu_supports_bf16,
    derive_seed,
    grad_scaler,
    resolve_device,
    rng_state,
    seed_everything,
    set_cpu_autocast,
    set_rng_state,
)

__all__ = [
    "ClassifierTrainConfig",
    "ClipTrainConfig",
    "DistInfo",
    "ResumableLoop",
    "all_gather_with_grad",
    "amp_dtype",
    "autocast",
    "cpu_supports_bf16",
    "barrier",
    "check_fingerprint",
    "cleanup",
    "clip_loss",
    "count_parameters",
    "derive_seed",
    "encode_dataset",
    "epoch_loader",
    "evaluate",
    "evaluate_clip",
    "fit_classifier",
    "fingerprint",
    "state_digest",
    "fit_clip",
    "get_rank",
    "get_world_size",
    "grad_scaler",
    "has_checkpoint",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_cpu_autocast",
    "set_rng_state",
    "train_one_epoch",
    "unwrap",
]
