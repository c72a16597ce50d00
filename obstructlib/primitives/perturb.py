"""Additive image perturbations: projections, PGD steps, and a store-backed pass over a dataset.

The shared primitive behind every data-side method of the course: error-minimising noise
(Huang et al.), error-maximising / adversarial poisons (TAP), Unlearnable Clusters' baselines and
MEM's image noise against a CLIP loss. Everything works with ANY loss closure: ``pgd`` only sees
``loss_fn(x_perturbed) -> scalar``, and :func:`perturb_dataset` only sees
``loss_fn(x_perturbed, batch) -> scalar``, so a classifier's cross-entropy and a contrastive
CLIP loss (with captions shuffled inside the closure) go through the same code.

Conventions: images are float in [0, 1]; a delta is in the same [0, 1] pixel units (``8/255``
is eight 8-bit grey levels); ``eps`` bounds ``|delta|_inf`` (``norm="linf"``) or the per-sample
Euclidean norm ``|delta|_2`` (``norm="l2"``); every function returns a delta with ``x + delta``
inside [0, 1] whenever it is given ``x``.

References:
    Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, arXiv:1706.06083 (PGD).
    Huang et al., Unlearnable Examples, arXiv:2101.04898 (min-min PGD, error-minimising noise).
    Fowl et al., Adversarial Examples Make Strong Poisons, arXiv:2106.10807 (TAP).
    Liu et al., Multimodal Unlearnable Examples (MEM), arXiv:2407.16307.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from obstructlib.data import IndexedDataset, PerturbationStore, SizedDataset
from obstructlib.errors import ConfigError

__all__ = [
    "clip_to_image",
    "frozen",
    "perturb_dataset",
    "pgd",
    "pgd_step",
    "project",
    "random_noise",
]

NORMS = ("linf", "l2")
_TINY = 1e-12  # keeps per-sample normalisation finite for an all-zero gradient or delta


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm={norm!r}: use 'linf' or 'l2'")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of every sample, shaped ``(B, 1, ..., 1)`` so it broadcasts against ``t``."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``delta`` onto the eps-ball: clamp (L-inf) or rescale each sample (L2).

    Args:
        delta: perturbations in [0, 1] pixel units.
        eps: radius in pixel units (e.g. ``8/255`` for L-inf, ``0.5`` for L2), ``>= 0``.
        norm: ``"linf"`` or ``"l2"`` (the L2 ball is per sample: over all dims but the first).

    Shape:
        ``(B, ...)`` in and out.

    Example:
        >>> d = project(torch.tensor([[3.0, 4.0]]), 1.0, "l2"); d
        tensor([[0.6000, 0.8000]])
    """
    _check_norm(norm)
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)


def clip_to_image(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shrink ``delta`` so that ``x + delta`` stays in [0, 1] (never moves outside its ball).

    Args:
        delta: perturbation in pixel units.
        x: clean images in [0, 1], same shape (or broadcastable).

    Example:
        >>> clip_to_image(torch.tensor([0.2, -0.2]), torch.tensor([0.9, 0.1]))
        tensor([ 0.1000, -0.1000])
    """
    return (x + delta).clamp(0.0, 1.0) - x


def pgd_step(
    delta: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    eps: float,
    x: torch.Tensor | None = None,
    norm: str = "linf",
    minimize: bool = True,
) -> torch.Tensor:
    """One projected step: signed gradient (L-inf) or per-sample unit gradient (L2).

    ``delta - step * sign(grad)`` when minimising (error-minimising noise, targeted attacks),
    ``+`` when maximising (adversarial examples); then :func:`project` and, with ``x``,
    :func:`clip_to_image`.

    Args:
        delta: current perturbation, pixel units.
        grad: gradient of the loss with respect to the perturbed input (or delta).
        step_size: step length in pixel units (e.g. ``0.8/255``; for L2 the step's L2 norm).
        eps: ball radius in pixel units.
        x: clean images in [0, 1]; None skips the [0, 1] clipping.
        norm: ``"linf"`` or ``"l2"``.
        minimize: descend (True) or ascend (False).

    Shape:
        ``delta``, ``grad``, ``x``: ``(B, C, H, W)``; returns the new ``delta`` (no autograd history).

    Example:
        >>> pgd_step(torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]), 0.1, 0.05)
        tensor([[-0.0500,  0.0500]])
    """
    _check_norm(norm)
    with torch.no_grad():
        direction = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad)
        new = delta.detach() + (-step_size if minimize else step_size) * direction
        new = project(new, eps, norm)
        return new if x is None else clip_to_image(new, x.detach())


def random_noise(
    shape: Sequence[int],
    eps: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    """Noise drawn uniformly from the eps-ball (a PGD random start, or the "random noise" baseline).

    L-inf: every value uniform in ``[-eps, eps]``. L2: uniform in the per-sample ball (Gaussian
    direction, radius ``eps * U^(1/d)`` with ``d`` values per sample).

    Args:
        shape: ``(B, C, H, W)`` (the first dim indexes samples for L2).
        eps: radius in pixel units.
        generator: drawn from this generator (on its own device) for reproducibility.
        device: where the result lives (default: the generator's device, else CPU).
        norm: ``"linf"`` or ``"l2"``.

    Example:
        >>> n = random_noise((2, 3, 4, 4), 8 / 255, torch.Generator().manual_seed(0))
        >>> bool(n.abs().max() <= 8 / 255)
        True
    """
    _check_norm(norm)
    gen_device = generator.device if generator is not None else device
    shape = tuple(int(s) for s in shape)
    if norm == "linf":
        out = (torch.rand(shape, generator=generator, device=gen_device) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator, device=gen_device)
        d = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        radius = torch.rand(shape[0], generator=generator, device=gen_device) ** (1.0 / d) * eps
        out = direction / _per_sample_norm(direction) * radius.view(-1, *([1] * (len(shape) - 1)))
    return out.to(device) if device is not None else out


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Turn ``requires_grad`` off on every parameter of ``modules``; restore each flag on exit.

    Input-gradient loops (PGD) then build no weight-gradient graph, which saves memory and time.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with frozen(net):
        ...     assert not net.weight.requires_grad
        >>> net.weight.requires_grad
        True
    """
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def pgd(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    delta0: torch.Tensor | None = None,
    *,
    eps: float,
    step_size: float,
    steps: int,
    minimize: bool = True,
    norm: str = "linf",
    random_start: bool = False,
    generator: torch.Generator | None = None,
    frozen_module: nn.Module | None = None,
) -> torch.Tensor:
    """Projected gradient descent (or ascent) on an additive perturbation of ``x``.

    Each step evaluates ``loss_fn(x + delta)``, takes the gradient with respect to ``delta``
    only (``torch.autograd.grad``: no ``.grad`` of any parameter is written), and applies
    :func:`pgd_step`. Huang et al.'s min-min step is ``minimize=True`` with ``norm="linf"``;
    an adversarial example (or a TAP poison) is ``minimize=False`` (or a targeted loss minimised).

    Args:
        loss_fn: ``loss_fn(x_perturbed) -> loss``; a scalar, or per-sample losses (summed, which
            leaves each sample's gradient unchanged). It decides the model's train/eval mode.
        x: clean images in [0, 1].
        delta0: warm start (e.g. the stored noise of these samples); None starts at zero.
        eps: ball radius in pixel units (``8/255``).
        step_size: step length in pixel units (``0.8/255`` in Huang et al.).
        steps: number of steps (0 returns the projected start).
        minimize: descend on the loss (True) or ascend (False).
        norm: ``"linf"`` or ``"l2"``.
        random_start: add :func:`random_noise` to the start.
        generator: RNG for the random start.
        frozen_module: a model whose parameters get ``requires_grad=False`` during the loop
            (restored afterwards); optional, it only saves work.

    Returns:
        The final delta (detached), inside the eps-ball with ``x + delta`` in [0, 1].

    Shape:
        ``x``, ``delta0`` and the result: ``(B, C, H, W)``.

    References:
        Madry et al., arXiv:1706.06083; Huang et al., arXiv:2101.04898 (min-min).

    Example:
        >>> x = torch.full((1, 1, 2, 2), 0.5)
        >>> d = pgd(lambda z: z.sum(), x, eps=4 / 255, step_size=1 / 255, steps=6)
        >>> torch.allclose(d, torch.full_like(x, -4 / 255))
        True
    """
    _check_norm(norm)
    if steps < 0 or step_size < 0 or eps < 0:
        raise ConfigError(f"steps={steps}, step_size={step_size}, eps={eps}: use non-negative values")
    x = x.detach()
    delta = torch.zeros_like(x) if delta0 is None else delta0.detach().to(x.device, x.dtype)
    if random_start:
        delta = delta + random_noise(x.shape, eps, generator, x.device, norm).to(x.dtype)
    delta = clip_to_image(project(delta, eps, norm), x)
    with frozen(frozen_module), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(x + delta)
            (grad,) = torch.autograd.grad(loss.float().sum(), delta)
            delta = pgd_step(delta, grad, step_size, eps, x, norm, minimize)
    return delta.detach()


class _Batches:
    """Index batches of one pass, in order or a seeded permutation, minus those already done."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        skip_batches: int,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        # ``indices``: visit only these samples (a rank's shard, a protected subset), same seeded rule
        pool = torch.arange(n) if indices is None else torch.as_tensor(np.asarray(indices, dtype=np.int64))
        perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)) if shuffle else None
        order = pool if perm is None else pool[perm]
        self.batches = list(order.split(batch_size))
        self.skip = skip_batches

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self.batches[self.skip :])

    def __len__(self) -> int:
        return max(len(self.batches) - self.skip, 0)


def _to(batch: Sequence, device: torch.device) -> tuple:
    return tuple(b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch)


def perturb_dataset(
    store: PerturbationStore,
    dataset: SizedDataset,
    loss_fn: Callable[[torch.Tensor, tuple], torch.Tensor],
    *,
    step_size: float,
    steps: int,
    device: torch.device | str,
    batch_size: int = 128,
    minimize: bool = True,
    shuffle: bool = False,
    seed: int = 0,
    random_start: bool = False,
    cluster_noise: torch.Tensor | None = None,
    frozen_module: nn.Module | None = None,
    skip_batches: int = 0,
    after_batch: Callable[[int], None] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "noise",
    before_batch: Callable[[tuple, torch.Tensor], None] | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
) -> torch.Tensor | None:
    """One pass of warm-started L-inf PGD over a dataset, reading and writing ``store`` by sample index.

    For every batch the noise of its samples is read from the store (by DATASET index, so the
    order of the pass never matters), ``steps`` PGD steps run on ``loss_fn``, and the result is
    written back. Sample mode writes each sample's row (rounded to whole 1/255 units by the
    store). Cluster mode follows Huang et al.'s class-wise update: each sample starts from its
    cluster's noise, and the cluster's noise becomes the mean of its members' results in the
    batch; that running state is kept in float32 in ``cluster_noise`` (a sub-unit step would
    be lost to rounding otherwise) and written to the store at the end.

    Args:
        store: the noise; its ``eps`` (effective, whole units) is the L-inf budget.
        dataset: items ``(image float (C, H, W) in [0, 1], ...)`` (labels, captions ...), no
            random augmentation (the noise must stay pixel-aligned).
        loss_fn: ``loss_fn(x_perturbed, batch) -> loss`` with ``batch = (indices, images, *rest)``
            on ``device`` (tensors moved; strings as lists).
        step_size: PGD step in pixel units.
        steps: PGD steps per batch.
        device: where to compute.
        batch_size: samples per batch.
        minimize: error-minimising (True) or error-maximising (False) steps.
        shuffle: visit samples in a seeded random order (needed when batch composition matters,
            e.g. contrastive losses or class-wise means).
        seed: seed of the order and of random starts.
        random_start: start each batch's PGD at its stored noise plus uniform noise.
        cluster_noise: cluster mode: the float ``(num_clusters, C, H, W)`` state to continue
            from (default: read from the store); updated in place.
        frozen_module: model whose parameters are frozen during the pass (restored after).
        skip_batches: batches of this pass already done (resume).
        after_batch: called with the number of batches done after each batch (checkpointing).
        num_workers: DataLoader workers.
        progress: show a tqdm bar.
        desc: bar label.
        before_batch: called as ``before_batch(batch, delta0)`` before each batch's PGD, with the
            batch's current noise on ``device`` (MEM updates its text triggers here).
        indices: visit only these dataset indices (a rank's shard of the noise); default all.

    Returns:
        The float cluster noise in cluster mode, None in sample mode.

    Shape:
        ``cluster_noise``: ``(store.num, *store.shape)`` on CPU.

    References:
        Huang et al., arXiv:2101.04898 (sample-wise and class-wise min-min updates).

    Example:
        >>> from obstructlib.data import ArrayImageDataset
        >>> ds = ArrayImageDataset(np.full((4, 2, 2), 128, np.uint8), [0, 1, 0, 1])
        >>> store = PerturbationStore(4, (1, 2, 2), eps=4 / 255)
        >>> _ = perturb_dataset(store, ds, lambda z, b: z.sum(), step_size=1 / 255, steps=4,
        ...                     device="cpu", progress=False)
        >>> int(store.data.min())
        -4
    """
    device = torch.device(device)
    eps = store.eps_units / 255.0  # the store's effective ball: nothing gets clamped on write
    if store.mode == "cluster" and cluster_noise is None:
        cluster_noise = store.get(range(store.num))
    means = cluster_noise if store.mode == "cluster" else None  # cluster mode's running noise, updated in place
    indexed = IndexedDataset(dataset)
    batches = _Batches(len(indexed), batch_size, shuffle, seed, skip_batches, indices)
    loader = DataLoader(
        indexed, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    done = skip_batches
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = _to(batch, device)
        idx, x = batch[0], batch[1]
        rows = store.rows_of(idx)
        delta0 = means[rows] if means is not None else store.get(rows)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + done) if random_start else None
        if before_batch is not None:
            before_batch(batch, delta0.to(device))
        delta = pgd(
            lambda z: loss_fn(z, batch),  # called only inside this iteration
            x,
            delta0.to(device),
            eps=eps,
            step_size=step_size,
            steps=steps,
            minimize=minimize,
            random_start=random_start,
            generator=generator,
            frozen_module=frozen_module,
        ).cpu()
        if means is not None:
            # Huang et al.: class noise <- mean of its members' results (after the [0, 1] clip: a
            # documented deviation, see obstructlib.primitives.poisons)
            for k in np.unique(rows):
                means[k] = delta[torch.from_numpy(rows == k)].mean(0).clamp(-eps, eps)
        else:
            store.set(rows, delta)
        done += 1
        if after_batch is not None:
            if means is not None:
                store.set(range(store.num), means)
            after_batch(done)
    if means is not None:
        store.set(range(store.num), means)
    return cluster_noise
