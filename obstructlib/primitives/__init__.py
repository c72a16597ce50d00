"""Building blocks shared by two or more papers; nothing here is named after a paper.

- :mod:`~obstructlib.primitives.perturb`: projected sign-gradient PGD in L-inf/L2 balls, the
  dataset-level noise pass over an int8 store;
- :mod:`~obstructlib.primitives.poisons`: error-minimising (sample-/class-wise), error-maximising
  (TAP-style) and random noise, with their checkpoint helpers;
- :mod:`~obstructlib.primitives.kmeans`: torch k-means++;
- :mod:`~obstructlib.primitives.augment`: the CIFAR pad-crop-flip and SimCLR augmentations;
- :mod:`~obstructlib.primitives.text_triggers`: HotFlip search of caption triggers;
- :mod:`~obstructlib.primitives.countermeasures`: what a hacker tries against protected data, as
  one registry;
- :mod:`~obstructlib.primitives.pruning`: masks, their parametrisation and magnitude pruning;
- :mod:`~obstructlib.primitives.image_triggers`: BadNet, Blended, SIG, WaNet, patch and SSBA image triggers;
- :mod:`~obstructlib.primitives.feature_losses`: Gaussian MMD, the Fisher ratio, NT-Xent;
- :mod:`~obstructlib.primitives.simclr`: label-free SimCLR pre-training of a classifier's encoder.

Modules are imported on first use (``from obstructlib.primitives.perturb import pgd``); this
package imports none of them eagerly.
"""

__all__: list[str] = []
