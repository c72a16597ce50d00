"""One module per paper, plus shared perturbation and trigger primitives.

A method module never imports another method module; what two methods share (PGD steps,
error-minimising noise, HotFlip, triggers) lives in a shared primitive module here. Each paper's
issue adds its module: `perturb` and `poisons` (shared image-noise primitives: PGD, EM, TAP,
random noise), `kmeans`, and `uc` / `uc_steps` (Unlearnable Clusters, arXiv 2301.01217).
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
