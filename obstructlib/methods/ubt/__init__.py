"""UBT: token-level backdoor unlearning for CLIP, with the attacks it defends against (``ob.ubt``).

- :class:`Config` / :class:`Result` / :class:`Report` and :func:`defend` (the whole defence in one call);
- its steps, each usable alone: pair scores and pool selection (:func:`pair_similarities`,
  :func:`select_lowest`, :func:`select_highest`), overfitting (:func:`overfit`), the clean-model
  check (:func:`clean_check`, :class:`CleanCheck`), token attribution and masks
  (:func:`token_attributions`, :func:`keep_top_tokens`, :func:`consensus_filter`, :func:`mask_images`),
  the Cartesian set (:func:`cartesian_pairs`) and the ascent (:func:`unlearn`,
  :func:`contrastive_unlearning_loss`), all on one resumable loop (:func:`train_stage`);
- the attacks: :class:`AttackConfig`, :data:`ATTACKS`, :func:`build_trigger`, :func:`poison_pairs`,
  :func:`triggered_copy` (the image triggers themselves live in ``ob.primitives``);
- the evaluation: :func:`evaluate` (CA, ASR, KL to a reference) and :func:`detection_scores`;
- the baselines: FT (:func:`finetune_clean`), CleanCLIP (:func:`cleanclip`), RoCLIP (:func:`roclip`),
  ABL (:func:`abl`).

References:
    Liu et al., "Efficient Backdoor Defense in Multimodal Contrastive Learning: A Token-Level
    Unlearning Method for Mitigating Threats", arXiv:2409.19526 (first version arXiv:2403.16257).
"""

from obstructlib.methods.ubt.attacks import (
    ATTACKS,
    AttackConfig,
    build_trigger,
    class_names,
    poison_pairs,
    target_prompt,
    triggered_copy,
)
from obstructlib.methods.ubt.baselines import (
    ABLConfig,
    CleanCLIPConfig,
    RoCLIPConfig,
    abl,
    cleanclip,
    eda,
    finetune_clean,
    roclip,
)
from obstructlib.methods.ubt.evaluate import evaluate
from obstructlib.methods.ubt.method import (
    UBTConfig,
    UBTReport,
    UBTResult,
    defend,
    detection_scores,
    pool_recall_table,
)
from obstructlib.methods.ubt.steps import (
    CleanCheck,
    PairSubset,
    PairTensors,
    cartesian_pairs,
    clean_check,
    consensus_filter,
    contrastive_unlearning_loss,
    keep_top_tokens,
    mask_images,
    overfit,
    pair_similarities,
    select_highest,
    select_lowest,
    token_attributions,
    train_stage,
    unlearn,
    word_share,
)

Config = UBTConfig
Result = UBTResult
Report = UBTReport

__all__ = [
    "ABLConfig", "ATTACKS", "AttackConfig", "CleanCLIPConfig", "CleanCheck", "Config", "PairSubset", "PairTensors",
    "Report", "Result", "RoCLIPConfig", "UBTConfig", "UBTReport", "UBTResult", "abl", "build_trigger",
    "cartesian_pairs", "class_names", "clean_check", "cleanclip", "consensus_filter", "contrastive_unlearning_loss",
    "defend", "detection_scores", "eda", "evaluate", "finetune_clean", "keep_top_tokens", "mask_images", "overfit",
    "pair_similarities", "poison_pairs", "pool_recall_table", "roclip", "select_highest", "select_lowest",
    "target_prompt", "token_attributions", "train_stage", "triggered_copy", "unlearn", "word_share",
]
