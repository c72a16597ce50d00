"""One module per paper, plus shared perturbation and trigger primitives.

A method module never imports another method module; what two methods share (PGD steps,
error-minimising noise, HotFlip, triggers) lives in a shared primitive module here. Each paper's
issue adds its module; this package is empty until then.
"""

__all__: list[str] = []
