"""UBT: token-level backdoor unlearning for CLIP, with the attacks it defends against (``ob.ubt``).

References:
    Liu et al., "Efficient Backdoor Defense in Multimodal Contrastive Learning: A Token-Level
    Unlearning Method for Mitigating Threats", arXiv:2409.19526 (first version arXiv:2403.16257).
"""

from obstructlib.methods.ubt.steps import (
    CleanCheck,
    PairTensors,
    cartesian_pairs,
    clean_check,
    contrastive_unlearning_loss,
    keep_top_tokens,
    overfit,
    pair_similarities,
    select_highest,
    select_lowest,
    token_attributions,
    train_stage,
    unlearn,
)

__all__ = [
    "CleanCheck",
    "PairTensors",
    "cartesian_pairs",
    "clean_check",
    "contrastive_unlearning_loss",
    "keep_top_tokens",
    "overfit",
    "pair_similarities",
    "select_highest",
    "select_lowest",
    "token_attributions",
    "train_stage",
    "unlearn",
]
