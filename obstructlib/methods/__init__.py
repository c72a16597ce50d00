"""One module per paper, plus shared perturbation and trigger primitives.

A method module never imports another method module; what two methods share (PGD steps,
error-minimising noise, HotFlip, triggers) lives in a shared primitive module here. Each paper's
issue adds its module: `perturb` and `poisons` (shared image-noise primitives: PGD, EM, TAP,
random noise), `kmeans`, and `uc` / `uc_steps` (Unlearnable Clusters, arXiv 2301.01217).
Non-Transferable Pruning (arXiv 2410.08015) is `ntp` (the ADMM loop), `ntp_steps` (its masks,
ADMM pieces and loss terms, shared with its NTL baseline `ntl`) and `ntp_release` (the released
artefact, the attacks, magnitude pruning); `simclr` pre-trains encoders for its SSL variant.
"""

__all__: list[str] = []

# perturbation primitives
from obstructlib.methods.perturb import (
    clip_to_image,
    frozen,
    perturb_dataset,
    pgd,
    pgd_step,
    project,
    random_noise,
)
from obstructlib.methods.poisons import (
    ErrorMaxConfig,
    ErrorMinConfig,
    error_maximizing_noise,
    error_minimizing_noise,
    random_noise_store,
)

__all__ += [
    "ErrorMaxConfig",
    "ErrorMinConfig",
    "clip_to_image",
    "error_maximizing_noise",
    "error_minimizing_noise",
    "frozen",
    "perturb_dataset",
    "pgd",
    "pgd_step",
    "project",
    "random_noise",
    "random_noise_store",
]

# unlearnable clusters
from obstructlib.methods.kmeans import kmeans, sq_distances
from obstructlib.methods.uc import QUICK_OVERRIDES as UC_QUICK_OVERRIDES
from obstructlib.methods.uc import UCConfig, UCResult
from obstructlib.methods.uc import protect as uc_protect
from obstructlib.methods.uc_steps import (
    cluster_targets,
    extract_features,
    project_noise,
    train_generator,
    uc_loss,
)

__all__ += [
    "UC_QUICK_OVERRIDES",
    "UCConfig",
    "UCResult",
    "cluster_targets",
    "extract_features",
    "kmeans",
    "project_noise",
    "sq_distances",
    "train_generator",
    "uc_loss",
    "uc_protect",
]

# text triggers (shared) and multimodal unlearnable examples
from obstructlib.methods.mem import MEMConfig, MEMResult, clip_error_max_noise, mem_protect
from obstructlib.methods.mem_steps import ProtectedPairs, pair_collate, tokenize_captions
from obstructlib.methods.triggers import (
    decode_trigger,
    hotflip_attack,
    hotflip_candidates,
    hotflip_search,
    insert_trigger,
    random_trigger,
    strip_tokens,
)

__all__ += [
    "MEMConfig",
    "MEMResult",
    "ProtectedPairs",
    "clip_error_max_noise",
    "decode_trigger",
    "hotflip_attack",
    "hotflip_candidates",
    "hotflip_search",
    "insert_trigger",
    "mem_protect",
    "pair_collate",
    "random_trigger",
    "strip_tokens",
    "tokenize_captions",
]

# non-transferable pruning (arXiv 2410.08015), its NTL baseline (arXiv 2106.06916) and SimCLR (arXiv 2002.05709)
from obstructlib.methods.ntl import NTLConfig, ntl_loss, train_ntl
from obstructlib.methods.ntp import NTPConfig, NTPResult, nt_loss, ntp_prune, train_target_head
from obstructlib.methods.ntp_release import (
    finetune,
    load_released,
    magnitude_masks,
    magnitude_prune,
    save_released,
)
from obstructlib.methods.ntp_steps import (
    ADMMState,
    admm_init,
    admm_penalty,
    admm_step,
    apply_masks_,
    fisher_ratio,
    gaussian_mmd,
    init_masks,
    mask_parametrize,
    recalibrate_bn,
    remove_mask_parametrize,
    soft_threshold,
    sparsity_report,
)
from obstructlib.methods.simclr import SimCLRConfig, nt_xent_loss, simclr_augment, simclr_pretrain

__all__ += [
    "ADMMState",
    "NTLConfig",
    "NTPConfig",
    "NTPResult",
    "admm_init",
    "admm_penalty",
    "admm_step",
    "apply_masks_",
    "finetune",
    "fisher_ratio",
    "gaussian_mmd",
    "init_masks",
    "load_released",
    "magnitude_masks",
    "magnitude_prune",
    "mask_parametrize",
    "nt_loss",
    "ntl_loss",
    "ntp_prune",
    "recalibrate_bn",
    "remove_mask_parametrize",
    "save_released",
    "SimCLRConfig",
    "nt_xent_loss",
    "simclr_augment",
    "simclr_pretrain",
    "soft_threshold",
    "sparsity_report",
    "train_ntl",
    "train_target_head",
]
