"""Non-Transferable Pruning (NTP): ADMM pruning that makes an encoder a bad start on a target domain (``ob.ntp``).

- :class:`Config` / :class:`Result` and :func:`prune` (stage 2, the ADMM loop), with
  :func:`train_target_head` (stage 1) and :func:`nt_loss`;
- the ADMM pieces: :func:`admm_init`, :func:`admm_penalty`, :func:`admm_step`, :func:`soft_threshold`;
- baselines: :func:`magnitude_prune`, NTL (:class:`NTLConfig`, :func:`train_ntl`) and the SimCLR
  encoder of the self-supervised variant (:func:`simclr_pretrain`);
- the released artefact (:func:`save_released`, :func:`load_released`) and the attack
  (:func:`finetune`, masked or dense);
- the evaluation protocol: :class:`AttackConfig` and :func:`evaluate` (the attacker fine-tunes
  the released model at every budget; SLC-AUC against scratch, the owner's source accuracy),
  built on :func:`learning_curves` at a grid of budgets (:func:`budget_subset`) scored with
  :func:`~obstructlib.metrics.slc_auc`.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
"""

from obstructlib.methods.ntp.curves import accuracy, budget_subset, learning_curves
from obstructlib.methods.ntp.evaluate import ATTACKS, DEFAULT_RATIOS, AttackConfig, evaluate
from obstructlib.methods.ntp.method import NTPConfig, NTPResult, nt_loss, prune, train_target_head
from obstructlib.methods.ntp.ntl import NTLConfig, ntl_loss, train_ntl
from obstructlib.methods.ntp.release import finetune, load_released, magnitude_prune, save_released
from obstructlib.methods.ntp.steps import (
    ADMMState,
    admm_init,
    admm_penalty,
    admm_step,
    paired_batches,
    soft_threshold,
)
from obstructlib.primitives.simclr import SimCLRConfig, simclr_pretrain

Config = NTPConfig
Result = NTPResult

__all__ = [
    "ADMMState",
    "ATTACKS",
    "AttackConfig",
    "DEFAULT_RATIOS",
    "Config",
    "NTLConfig",
    "NTPConfig",
    "NTPResult",
    "Result",
    "SimCLRConfig",
    "accuracy",
    "admm_init",
    "admm_penalty",
    "admm_step",
    "budget_subset",
    "evaluate",
    "finetune",
    "learning_curves",
    "load_released",
    "magnitude_prune",
    "nt_loss",
    "ntl_loss",
    "paired_batches",
    "prune",
    "save_released",
    "simclr_pretrain",
    "soft_threshold",
    "train_ntl",
    "train_target_head",
]
