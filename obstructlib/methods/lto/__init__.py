"""Learning to Obstruct (LTO): a backbone meta-learned to be a poor start for restricted classes (``ob.lto``).

- :class:`Config` / :class:`Result` and :func:`obstruct`: the first-order obstruction loop (ascend the
  restricted-class loss, descend the other-class loss, both at the weights the few-shot learner
  reached from the current backbone; restore; update), with the baselines ``only-r`` and ``nof`` as
  its ``method``; ``order=2`` differentiates through an unrolled inner run instead
  (:func:`unrolled_gradients`, small models);
- the learner side: :class:`ClipTask` (CE, CoOp, Tip-Adapter-F: :func:`learner_config`,
  :func:`fit_learner`) and :class:`EpisodicTask` (ProtoNet and MetaOptNet in
  :mod:`~obstructlib.methods.lto.classical`: :func:`meta_train`, :func:`svm_logits`, :func:`ridge_logits`);
- the attribute variant: :class:`AttributeTask`, :func:`attack_attributes` (AUROC per attribute);
- SSD (:func:`ssd`), the unlearning baseline;
- the evaluation protocol: :func:`attack_clip`, :func:`attack_episodic` and :func:`evaluate`
  (DropRatio@beta from :mod:`obstructlib.metrics`).

References:
    Zheng et al., Learning to Obstruct Few-Shot Image Classification over Restricted Classes,
    ECCV 2024, arXiv:2409.19210.
"""

from obstructlib.methods.lto.attributes import AttributeTask, attack_attributes, attribute_logits, fit_attributes
from obstructlib.methods.lto.classical import (
    HEADS,
    EpisodicConfig,
    EpisodicHead,
    episode_losses,
    evaluate_episodes,
    meta_train,
    proto_logits,
    ridge_logits,
    svm_dual,
    svm_logits,
)
from obstructlib.methods.lto.evaluate import attack_clip, attack_episodic, evaluate, split_accuracy
from obstructlib.methods.lto.learners import (
    CIFAR_TEMPLATES,
    LEARNERS,
    Adapted,
    LearnerConfig,
    class_embeddings,
    fit_learner,
    init_learner,
    learner_config,
    learner_logits,
    learner_text,
    visual_parameters,
)
from obstructlib.methods.lto.method import (
    METHODS,
    LTOConfig,
    LTOResult,
    ObstructionTask,
    obstruct,
    per_class_pools,
    restore,
    snapshot,
)
from obstructlib.methods.lto.second_order import call_with, unrolled_gradients
from obstructlib.methods.lto.ssd import SSDConfig, fisher_diagonal, ssd
from obstructlib.methods.lto.tasks import ClipTask, EpisodicTask, draw_shots

Config = LTOConfig
Result = LTOResult

__all__ = [
    "AttributeTask", "attack_attributes", "attribute_logits", "fit_attributes",
    "CIFAR_TEMPLATES", "HEADS", "LEARNERS", "METHODS", "Adapted", "ClipTask", "Config", "EpisodicConfig",
    "EpisodicHead", "EpisodicTask", "LTOConfig", "LTOResult", "LearnerConfig", "ObstructionTask", "Result",
    "SSDConfig", "attack_clip", "attack_episodic", "call_with", "class_embeddings", "draw_shots", "episode_losses",
    "evaluate",
    "evaluate_episodes", "fisher_diagonal", "fit_learner", "init_learner", "learner_config", "learner_logits",
    "learner_text", "meta_train", "obstruct", "per_class_pools", "proto_logits", "restore", "ridge_logits",
    "snapshot", "split_accuracy", "ssd", "svm_dual", "svm_logits", "unrolled_gradients", "visual_parameters",
]
