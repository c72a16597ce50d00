"""Pure metric functions: tensors or arrays in, Python floats (or dicts, arrays) out.

- :mod:`~obstructlib.metrics.classification`: accuracy, subset/per-class/top-k accuracy,
  zero-shot accuracy, attack success rate, KL divergence between two models' predictions.
- :mod:`~obstructlib.metrics.retrieval`: image-text Recall@K and median rank, and their analytic
  chance levels.
- :mod:`~obstructlib.metrics.noise`: how class-wise a protective noise is (between-class energy,
  nearest-centroid accuracy of the noise alone).
- :mod:`~obstructlib.metrics.transfer`: the area under a sample-wise learning curve and NTP's
  SLC-AUC (arXiv 2410.08015).
- :mod:`~obstructlib.metrics.attributes`: binary AUROC per attribute and LTO's collateral matrix.
- :mod:`~obstructlib.metrics.obstruction`: Learning to Obstruct's DropRatio@beta on an outer-step
  trajectory (arXiv 2409.19210).
"""

from obstructlib.metrics.attributes import auroc_per_attribute, binary_auroc, collateral_matrix
from obstructlib.metrics.classification import (
    accuracy,
    attack_success_rate,
    kl_divergence,
    per_class_accuracy,
    subset_accuracy,
    topk_accuracy,
    zero_shot_accuracy,
)
from obstructlib.metrics.noise import noise_class_structure
from obstructlib.metrics.obstruction import drop_ratio_at, drop_ratios, mean_drop_ratio, operating_point
from obstructlib.metrics.retrieval import chance_retrieval, median_rank, retrieval_metrics, retrieval_ranks
from obstructlib.metrics.transfer import log_area, slc_auc

__all__ = [
    "accuracy",
    "attack_success_rate",
    "auroc_per_attribute",
    "binary_auroc",
    "chance_retrieval",
    "collateral_matrix",
    "drop_ratio_at",
    "drop_ratios",
    "kl_divergence",
    "log_area",
    "mean_drop_ratio",
    "median_rank",
    "noise_class_structure",
    "operating_point",
    "per_class_accuracy",
    "retrieval_metrics",
    "retrieval_ranks",
    "slc_auc",
    "subset_accuracy",
    "topk_accuracy",
    "zero_shot_accuracy",
]
