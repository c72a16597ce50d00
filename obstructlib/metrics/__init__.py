"""Pure metric functions: tensors or arrays in, Python floats (or dicts, arrays) out.

- :mod:`~obstructlib.metrics.classification`: accuracy, subset/per-class/top-k accuracy,
  zero-shot accuracy, attack success rate, KL divergence between two models' predictions.
- :mod:`~obstructlib.metrics.retrieval`: image-text Recall@K and median rank, and their analytic
  chance levels.
"""

from obstructlib.metrics.classification import (
    accuracy,
    attack_success_rate,
    kl_divergence,
    per_class_accuracy,
    subset_accuracy,
    topk_accuracy,
    zero_shot_accuracy,
)
from obstructlib.metrics.retrieval import chance_retrieval, median_rank, retrieval_metrics, retrieval_ranks

__all__ = [
    "accuracy",
    "attack_success_rate",
    "chance_retrieval",
    "kl_divergence",
    "median_rank",
    "per_class_accuracy",
    "retrieval_metrics",
    "retrieval_ranks",
    "subset_accuracy",
    "topk_accuracy",
    "zero_shot_accuracy",
]
