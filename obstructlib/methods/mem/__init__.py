"""Multimodal Unlearnable Examples (MEM): image noise + a text trigger per pair against CLIP (``ob.mem``).

- :class:`Config` / :class:`Result` and :func:`protect`: multi-step error minimisation (theta-,
  t- and delta-steps, caption shuffling) against a surrogate CLIP;
- baselines: :func:`clip_error_max_noise` (error-maximising, TAP-like); EM is ``Config.em()``;
- :class:`HackerConfig`, :func:`build_hacker` and :func:`evaluate`: the evaluation protocol (a
  hacker trains a CLIP on the published pairs; clean retrieval and zero-shot accuracy);
- the steps, for the notebook: :class:`PairState` (the three players' losses),
  :func:`clip_batch_loss`, :func:`surrogate_steps`.

References:
    Liu et al., Multimodal Unlearnable Examples: Protecting Data against Multimodal Contrastive
    Learning, ACM MM 2024, arXiv:2407.16307.
"""

from obstructlib.methods.mem.evaluate import COUNTERMEASURES, HackerConfig, build_hacker, evaluate
from obstructlib.methods.mem.method import MEMConfig, MEMResult, clip_error_max_noise, protect
from obstructlib.methods.mem.steps import PairState, clip_batch_loss, local_clip_loss, surrogate_steps

Config = MEMConfig
Result = MEMResult

__all__ = [
    "COUNTERMEASURES",
    "Config",
    "HackerConfig",
    "MEMConfig",
    "MEMResult",
    "PairState",
    "Result",
    "build_hacker",
    "clip_batch_loss",
    "clip_error_max_noise",
    "evaluate",
    "local_clip_loss",
    "protect",
    "surrogate_steps",
]
