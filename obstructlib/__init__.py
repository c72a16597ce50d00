"""obstructlib: making models and data hard to misuse.

Five papers, one small package (see ``notebooks/`` for the course):

- Unlearnable Clusters (arXiv 2301.01217) and Multimodal Unlearnable Examples (arXiv 2407.16307):
  protect data against being learnt;
- UBT token-level backdoor unlearning for CLIP;
- Non-Transferable Pruning (arXiv 2410.08015) and Learning to Obstruct: make a released model a
  poor start on a forbidden domain or restricted classes.

Layers (imports only point down): ``experiments`` -> ``methods.<paper>`` -> ``primitives`` ->
``engine``, ``metrics`` -> ``models``, ``data``. The public surface: one namespace per paper
(``ob.uc``, ``ob.mem``, ``ob.ubt``, ``ob.ntp``, ``ob.lto``, each with ``Config``, ``Result``, its verb
and ``evaluate``),
one per layer (``ob.data``, ``ob.models``, ``ob.engine``, ``ob.metrics``), ``ob.run(name, ...)``
for a runner in process, and the common names below; everything loads on first use.

Example:
    >>> import obstructlib as ob
    >>> train = ob.load_dataset("digits", split="train")
    >>> model = ob.create_model("digits_cnn", num_classes=10)
    >>> ob.uc.Config().num_clusters
    10
"""

from __future__ import annotations

import importlib
from typing import Any

from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError
from obstructlib.profiles import PROFILES, Profile, resolve_profile

__version__ = "0.1.0"

# public name -> submodule that defines it (imported lazily: `import obstructlib` stays fast)
_LAZY = {
    # data
    "load_dataset": "obstructlib.data", "list_datasets": "obstructlib.data",
    "ArrayImageDataset": "obstructlib.data", "CaptionDataset": "obstructlib.data",
    "templated_captions": "obstructlib.data", "IndexedDataset": "obstructlib.data",
    "seeded_subset": "obstructlib.data", "PerturbationStore": "obstructlib.data",
    "EpisodeSampler": "obstructlib.data",
    # models
    "create_model": "obstructlib.models", "create_clip": "obstructlib.models",
    "ClipModel": "obstructlib.models",
    # engine
    "seed_everything": "obstructlib.engine", "derive_seed": "obstructlib.engine",
    "resolve_device": "obstructlib.engine",
    "autocast": "obstructlib.engine", "fit_classifier": "obstructlib.engine",
    "fit_clip": "obstructlib.engine",
    "evaluate_clip": "obstructlib.engine", "ClipTrainConfig": "obstructlib.engine",
    "ClassifierTrainConfig": "obstructlib.engine", "save_checkpoint": "obstructlib.engine",
    "load_checkpoint": "obstructlib.engine",
    # metrics
    "accuracy": "obstructlib.metrics", "zero_shot_accuracy": "obstructlib.metrics",
    "retrieval_metrics": "obstructlib.metrics", "chance_retrieval": "obstructlib.metrics",
    "attack_success_rate": "obstructlib.metrics", "kl_divergence": "obstructlib.metrics",
    "slc_auc": "obstructlib.metrics",
    # config
    "apply_overrides": "obstructlib.config", "config_to_dict": "obstructlib.config",
    # runners in process
    "run": "obstructlib.experiments", "config_for": "obstructlib.experiments",
}

# namespaces: one per paper (``ob.uc.protect``) and one per layer (``ob.data.load_dataset``)
_NAMESPACES = {
    "uc": "obstructlib.methods.uc", "mem": "obstructlib.methods.mem", "ntp": "obstructlib.methods.ntp",
    "ubt": "obstructlib.methods.ubt", "lto": "obstructlib.methods.lto",
    "data": "obstructlib.data", "models": "obstructlib.models", "engine": "obstructlib.engine",
    "metrics": "obstructlib.metrics", "primitives": "obstructlib.primitives",
    "plotting": "obstructlib.plotting",
}

__all__ = [  # noqa: PLE0604 - the lazy names are strings too
    "ObstructError", "ConfigError", "DatasetNotFoundError", "Profile", "PROFILES", "resolve_profile",
    "__version__", *_LAZY, *_NAMESPACES,
]


def __getattr__(name: str) -> Any:
    if name in _NAMESPACES:
        module = importlib.import_module(_NAMESPACES[name])
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'obstructlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
