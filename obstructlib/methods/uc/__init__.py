"""Unlearnable Clusters (UC): label-agnostic unlearnable examples from cluster-wise noise (``ob.uc``).

- :class:`Config` / :class:`Result` and :func:`protect`: the method (surrogate features ->
  k-means -> one generator per cluster -> a cluster-mode noise store);
- :func:`pretrain_surrogate` (with :class:`SimCLRConfig`): the offline surrogate, pre-trained on the
  protector's images without labels (``simclr:<arch>``) or, label-aware, with them (``classifier:<arch>``);
- :class:`HackerConfig` and :func:`evaluate`: the evaluation protocol (a label-agnostic hacker
  relabels, applies a countermeasure and trains a fresh classifier; clean test accuracy);
- the steps, for the notebook: :func:`extract_features`, :func:`kmeans`, :func:`cluster_targets`,
  :func:`train_generator`, :func:`uc_loss`, :func:`project_noise`.

References:
    Zhang et al., Unlearnable Clusters: Towards Label-agnostic Unlearnable Examples, CVPR 2023,
    arXiv:2301.01217.
"""

from obstructlib.methods.uc.evaluate import HackerConfig, evaluate
from obstructlib.methods.uc.method import UCConfig, UCResult, protect
from obstructlib.methods.uc.steps import (
    cluster_targets,
    extract_features,
    project_noise,
    train_generator,
    uc_loss,
)
from obstructlib.methods.uc.surrogates import pretrain_surrogate
from obstructlib.primitives.kmeans import kmeans
from obstructlib.primitives.simclr import SimCLRConfig

Config = UCConfig
Result = UCResult

__all__ = [
    "Config",
    "HackerConfig",
    "Result",
    "SimCLRConfig",
    "UCConfig",
    "UCResult",
    "cluster_targets",
    "evaluate",
    "extract_features",
    "kmeans",
    "pretrain_surrogate",
    "project_noise",
    "protect",
    "train_generator",
    "uc_loss",
]
