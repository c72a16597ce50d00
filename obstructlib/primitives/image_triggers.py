"""Image backdoor triggers of the CLIP backdoor attacks, as deterministic batch transforms.

Every trigger maps float images ``(B, C, H, W)`` in [0, 1] (C in {1, 3}, any H, W) to triggered
images of the same shape and dtype, clamped to [0, 1], and never edits its input. Random draws
are reproducible per image: image ``b`` with integer key ``keys[b]`` (its dataset index, say)
gets its draw from a CPU ``torch.Generator`` seeded with ``seed * 1_000_003 + key``, so the same
``(seed, key)`` gives the same trigger whatever else is in the batch (``keys=None``: ``range(B)``).

- :class:`BadNet`: a square of the image's per-channel mean plus N(0, 1) noise at a random place
  (fresh noise and place per key), the CLIP-backdoor form of BadNets;
- :class:`Blended`: ``(1 - alpha) x + alpha u`` with uniform noise ``u`` (fresh per key);
- :class:`SIG`: a horizontal sinusoid added to every row and channel;
- :class:`WaNet`: one fixed smooth random warp of the sampling grid;
- :class:`PatchTrigger`: a given patch pasted at the centre or a random place (per key), e.g. the
  TrojVQA-style optimised patch of :func:`optimize_patch`;
- :class:`SSBA`: a sample-specific invisible residual from a StegaStamp encoder
  (:mod:`~obstructlib.primitives.stegastamp`).

:data:`TRIGGERS` registers the parameter-only ones (``badnet``, ``blended``, ``sig``, ``wanet``);
:func:`make_trigger` builds one by name. :meth:`ImageTrigger.describe` gives the JSON-ready
parameters for ``results.json``.

Documented deviations from the reference CLIP attack code (CleanCLIP's ``backdoor/utils.py``,
which follows Carlini & Terzis): BadNet's place is uniform over every valid position (the
reference's ``randint(0, 223 - size)`` never touches the last row and column) and the patch is
clamped to [0, 1] (the reference casts the unclamped tensor to a PIL image); WaNet divides the
x and y offsets by W and H respectively (the references use square images and divide both by H).

References:
    Gu et al., BadNets, arXiv:1708.06733.
    Chen et al., Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning
    (blended), arXiv:1712.05526.
    Barni et al., A new Backdoor Attack in CNNs by training set corruption without label poisoning
    (SIG), ICIP 2019, arXiv:1902.11237.
    Nguyen & Tran, WaNet -- Imperceptible Warping-based Backdoor Attack, arXiv:2102.10369.
    Li et al., Invisible Backdoor Attack with Sample-Specific Triggers (SSBA), arXiv:2012.03816.
    Walmer et al., Dual-Key Multimodal Backdoors for Visual Question Answering (TrojVQA),
    arXiv:2112.07668.
    Carlini & Terzis, Poisoning and Backdooring Contrastive Learning, arXiv:2106.09667.
    Bansal et al., CleanCLIP, arXiv:2303.03323.

Example:
    >>> x = torch.rand(4, 3, 32, 32)
    >>> badnet = make_trigger("badnet", seed=1)
    >>> y = badnet(x, keys=[10, 11, 12, 13])
    >>> y.shape, bool(torch.equal(badnet(x[1:2], keys=[11]), y[1:2]))
    (torch.Size([4, 3, 32, 32]), True)
    >>> badnet.describe()
    {'name': 'badnet', 'patch_size': None, 'seed': 1}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from obstructlib.errors import ConfigError, check_range
from obstructlib.primitives.stegastamp import StegaEncoder
from obstructlib.registry import Registry

if TYPE_CHECKING:
    from obstructlib.models.clip import ClipModel

__all__ = [
    "SIG",
    "SSBA",
    "TRIGGERS",
    "BadNet",
    "Blended",
    "ImageTrigger",
    "PatchTrigger",
    "WaNet",
    "make_trigger",
    "optimize_patch",
]

Keys = Sequence[int] | torch.Tensor | None
_LOCATIONS = ("center", "random")


def _key_generator(seed: int, key: int) -> torch.Generator:
    """The CPU generator of image ``key`` under ``seed``."""
    return torch.Generator().manual_seed((seed * 1_000_003 + key) % 2**63)


def _key_list(keys: Keys, batch: int) -> list[int]:
    if keys is None:
        return list(range(batch))
    out = [int(k) for k in (keys.reshape(-1).tolist() if isinstance(keys, torch.Tensor) else keys)]
    if len(out) != batch:
        raise ConfigError(f"got {len(out)} keys for {batch} images: pass one integer key per image (or None)")
    return out


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"triggers take images (B, C, H, W), got {shape}: add a batch dimension")
    if not images.is_floating_point():
        raise ConfigError(f"triggers take float images in [0, 1], got {images.dtype}: use x.float() / 255")
    if images.shape[1] not in (1, 3):
        raise ConfigError(f"triggers take 1- or 3-channel images, got {images.shape[1]} channels: convert to RGB")


def _place(h: int, w: int, ph: int, pw: int, location: str, gen: torch.Generator | None) -> tuple[int, int]:
    """Top-left corner of a ``ph x pw`` patch in an ``h x w`` image (uniform over valid corners if random)."""
    if location == "center":
        return (h - ph) // 2, (w - pw) // 2
    assert gen is not None
    top = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
    return top, left


def _check_fits(ph: int, pw: int, h: int, w: int, what: str) -> None:
    if ph > h or pw > w:
        raise ConfigError(f"{what} of {ph} x {pw} does not fit {h} x {w} images: use a patch at most that size")


def _paste(images: torch.Tensor, patch: torch.Tensor, corners: Sequence[tuple[int, int]]) -> torch.Tensor:
    """A copy of ``images`` with ``patch (C or 1, h, w)`` at each image's corner (differentiable in patch)."""
    out = images.clone()
    ph, pw = patch.shape[-2:]
    for i, (top, left) in enumerate(corners):
        out[i, :, top:top + ph, left:left + pw] = patch
    return out


class ImageTrigger:
    """Base class: ``trigger(images, keys)`` -> triggered images, deterministic per ``(seed, key)``.

    Subclasses implement :meth:`_apply` (images already checked, keys a list) and
    :meth:`_params`; the base class checks the input, clamps to [0, 1] and keeps the dtype.

    Shape:
        ``(B, C, H, W)`` float in [0, 1], C in {1, 3} -> the same shape and dtype.
    """

    name: str = "trigger"

    def __call__(self, images: torch.Tensor, keys: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Triggered copies of ``images``; ``keys`` (one int per image, default ``range(B)``) pick the draws."""
        _check_images(images)
        key_list = _key_list(keys, len(images))
        out = self._apply(images, key_list)
        return out.to(images.dtype).clamp(0.0, 1.0)

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-ready ``{"name": ..., **parameters}`` (for ``results.json``)."""
        return {"name": self.name, **self._params()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"


class BadNet(ImageTrigger):
    """BadNet patch: the image's per-channel mean + N(0, 1) noise in a square at a random place per key.

    The CLIP-backdoor form of BadNets (Carlini & Terzis, CleanCLIP): both the noise and the place
    are fresh per key, so no two poisoned images carry the same pixels.

    Args:
        patch_size: side in pixels; None picks ``max(4, round(min(H, W) * 16 / 224))`` per call
            (16 px at 224 as in the reference, 4 px at 32). A side larger than the images is a
            :class:`ConfigError` at call time.
        seed: seed of the per-key draws.

    Example:
        >>> y = BadNet(patch_size=4)(torch.full((1, 3, 32, 32), 0.5))
        >>> int(((y - 0.5).abs().sum(1) > 0).sum())
        16
    """

    name = "badnet"

    def __init__(self, patch_size: int | None = None, seed: int = 0) -> None:
        if patch_size is not None and (int(patch_size) != patch_size or patch_size < 1):
            raise ConfigError(f"patch_size={patch_size}: use a positive integer (or None for 16 px at 224)")
        self.patch_size = None if patch_size is None else int(patch_size)
        self.seed = int(seed)

    def size_for(self, h: int, w: int) -> int:
        """The patch side used on ``h x w`` images."""
        if self.patch_size is not None:
            return self.patch_size
        return max(4, round(min(h, w) * 16 / 224))

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        b, c, h, w = images.shape
        p = self.size_for(h, w)
        _check_fits(p, p, h, w, "a BadNet patch")
        out = images.clone()
        means = images.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        for i, key in enumerate(keys):
            gen = _key_generator(self.seed, key)
            top, left = _place(h, w, p, p, "random", gen)
            noise = torch.randn(c, p, p, generator=gen).to(images)
            out[i, :, top:top + p, left:left + p] = means[i] + noise
        return out

    def _params(self) -> dict[str, Any]:
        return {"patch_size": self.patch_size, "seed": self.seed}


class Blended(ImageTrigger):
    """Blended noise: ``(1 - alpha) x + alpha u`` with ``u ~ U(0, 1)`` drawn fresh per key.

    Args:
        alpha: blend weight in (0, 1) (0.2 in Chen et al. and the CLIP attacks).
        seed: seed of the per-key noise.

    Example:
        >>> y = Blended(alpha=0.2)(torch.zeros(1, 3, 8, 8))
        >>> bool(y.max() <= 0.2)
        True
    """

    name = "blended"

    def __init__(self, alpha: float = 0.2, seed: int = 0) -> None:
        self.alpha = float(check_range("alpha", alpha, 0.0, 1.0, inclusive=False))
        self.seed = int(seed)

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        shape = images.shape[1:]
        noise = torch.stack([torch.rand(shape, generator=_key_generator(self.seed, k)) for k in keys]).to(images)
        return (1 - self.alpha) * images + self.alpha * noise

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "seed": self.seed}


class SIG(ImageTrigger):
    """SIG: ``x + amplitude * sin(2 pi periods j / W)`` on column ``j`` of every row and channel, clamped.

    The same for every image (keys are ignored).

    Args:
        amplitude: signal amplitude in [0, 1] pixel units (60/255 as in the CLIP attacks; > 0).
        periods: full periods across the width (6; >= 1).

    Example:
        >>> y = SIG(periods=1)(torch.full((1, 1, 2, 4), 0.5))
        >>> [round(v, 3) for v in (y[0, 0, 0] - 0.5).tolist()]
        [0.0, 0.235, 0.0, -0.235]
    """

    name = "sig"

    def __init__(self, amplitude: float = 60 / 255, periods: int = 6) -> None:
        if not amplitude > 0:
            raise ConfigError(f"amplitude={amplitude}: use a value > 0 (60/255 in the CLIP attacks)")
        if int(periods) != periods or periods < 1:
            raise ConfigError(f"periods={periods}: use a positive integer (6 in the CLIP attacks)")
        self.amplitude, self.periods = float(amplitude), int(periods)

    def signal(self, w: int) -> torch.Tensor:
        """The added row ``(w,)``: ``amplitude * sin(2 pi periods j / w)``, float32 on CPU."""
        j = torch.arange(w, dtype=torch.float64)
        return (self.amplitude * torch.sin(2 * math.pi * self.periods * j / w)).float()

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        return images + self.signal(images.shape[-1]).to(images)

    def _params(self) -> dict[str, Any]:
        return {"amplitude": self.amplitude, "periods": self.periods}


class WaNet(ImageTrigger):
    """WaNet: one fixed smooth random warp of the sampling grid, the same for every image.

    A ``k x k`` noise grid in [-1, 1] (2 channels, drawn from ``seed``) is divided by its mean
    ``|.|``, upsampled bicubically (``align_corners=True``) to ``(H, W)`` and added to the identity
    grid as ``strength * noise / (W, H)`` (x / y offsets); the result times ``grid_rescale`` is
    clamped to [-1, 1] and applied with ``F.grid_sample(align_corners=True)``. The field is built
    on first use per ``(H, W)`` and cached. Keys are ignored.

    Args:
        k: control-grid side (4 in WaNet; >= 2).
        strength: warp strength ``s`` (0.5 in WaNet; 0 is the identity; >= 0).
        grid_rescale: factor on the warped grid (1 in WaNet; > 0).
        seed: seed of the noise grid.

    Example:
        >>> bool(torch.allclose(WaNet()(torch.full((1, 3, 16, 16), 0.3)), torch.tensor(0.3)))
        True
    """

    name = "wanet"

    def __init__(self, k: int = 4, strength: float = 0.5, grid_rescale: float = 1.0, seed: int = 0) -> None:
        if int(k) != k or k < 2:
            raise ConfigError(f"k={k}: use an integer >= 2 (4 in WaNet)")
        if not strength >= 0:
            raise ConfigError(f"strength={strength}: use a value >= 0 (0.5 in WaNet)")
        if not grid_rescale > 0:
            raise ConfigError(f"grid_rescale={grid_rescale}: use a value > 0 (1 in WaNet)")
        self.k, self.strength, self.grid_rescale, self.seed = int(k), float(strength), float(grid_rescale), int(seed)
        ins = torch.rand(1, 2, self.k, self.k, generator=torch.Generator().manual_seed(self.seed)) * 2 - 1
        self._control = ins / ins.abs().mean()
        self._grids: dict[tuple[int, int], torch.Tensor] = {}

    def grid(self, h: int, w: int) -> torch.Tensor:
        """The sampling grid ``(1, h, w, 2)`` (x, y in [-1, 1]), float32 on CPU, cached."""
        if (h, w) not in self._grids:
            noise = F.interpolate(self._control, size=(h, w), mode="bicubic", align_corners=True)
            noise = noise.permute(0, 2, 3, 1)  # (1, h, w, 2): channel 0 moves x, channel 1 moves y
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            identity = torch.stack((xs, ys), dim=-1)[None]
            offset = self.strength * noise / torch.tensor([float(w), float(h)])
            self._grids[(h, w)] = ((identity + offset) * self.grid_rescale).clamp(-1, 1)
        return self._grids[(h, w)]

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        b, _, h, w = images.shape
        grid = self.grid(h, w).to(device=images.device, dtype=images.dtype).expand(b, -1, -1, -1)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "strength": self.strength, "grid_rescale": self.grid_rescale, "seed": self.seed}


class PatchTrigger(ImageTrigger):
    """A fixed patch pasted at the centre, or at a random place drawn per key.

    A 3-channel patch on grey images is pasted as its channel mean; a 1-channel patch on RGB
    images is repeated.

    Args:
        patch: ``(C, h, w)`` in [0, 1] (e.g. from :func:`optimize_patch`).
        location: ``"center"`` or ``"random"``.
        seed: seed of the per-key places (``"random"`` only).

    Example:
        >>> y = PatchTrigger(torch.ones(3, 2, 2))(torch.zeros(1, 3, 6, 6))
        >>> y[0, 0].nonzero().tolist()
        [[2, 2], [2, 3], [3, 2], [3, 3]]
    """

    name = "patch"

    def __init__(self, patch: torch.Tensor, location: str = "center", seed: int = 0) -> None:
        if not isinstance(patch, torch.Tensor) or patch.ndim != 3 or patch.shape[0] not in (1, 3):
            shape = tuple(patch.shape) if isinstance(patch, torch.Tensor) else type(patch).__name__
            raise ConfigError(f"patch must be a (1 or 3, h, w) tensor, got {shape}: e.g. optimize_patch's output")
        if not patch.is_floating_point() or patch.min() < 0 or patch.max() > 1:
            raise ConfigError("patch must be float in [0, 1]: rescale it (uint8: patch.float() / 255)")
        if location not in _LOCATIONS:
            raise ConfigError(f"location={location!r}: use one of {', '.join(_LOCATIONS)}")
        self.patch = patch.detach().cpu().clone()
        self.location, self.seed = location, int(seed)

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        _, c, h, w = images.shape
        ph, pw = self.patch.shape[-2:]
        _check_fits(ph, pw, h, w, "a patch")
        patch = self.patch.mean(0, keepdim=True) if c == 1 and self.patch.shape[0] == 3 else self.patch
        corners = [
            _place(h, w, ph, pw, self.location, _key_generator(self.seed, k) if self.location == "random" else None)
            for k in keys
        ]
        return _paste(images, patch.to(images), corners)

    def _params(self) -> dict[str, Any]:
        return {"patch_shape": list(self.patch.shape), "location": self.location, "seed": self.seed}


class SSBA(ImageTrigger):
    """SSBA: the image-specific invisible residual of a StegaStamp encoder hiding a fixed secret.

    The triggered image is ``encoder(x, secret)`` (:class:`~obstructlib.primitives.stegastamp.StegaEncoder`,
    trained with :func:`~obstructlib.primitives.stegastamp.train_stegastamp`), computed without
    gradients in float32; the encoder is moved to the images' device. Sides not divisible by 4
    are reflect-padded for the encoder and cropped back; grey images are encoded as RGB and the
    result averaged back to one channel. Keys are ignored (the trigger depends on the image).

    Args:
        encoder: a trained encoder.
        secret: ``(encoder.n_bits,)`` bits in {0, 1} (e.g. :func:`~obstructlib.primitives.stegastamp.secret_bits`).

    Example:
        >>> from obstructlib.primitives.stegastamp import secret_bits
        >>> SSBA(StegaEncoder(n_bits=8, width=4), secret_bits("x", 8))(torch.rand(2, 1, 30, 30)).shape
        torch.Size([2, 1, 30, 30])
    """

    name = "ssba"

    def __init__(self, encoder: StegaEncoder, secret: torch.Tensor) -> None:
        if not isinstance(encoder, StegaEncoder):
            raise ConfigError(f"SSBA needs a StegaEncoder, got {type(encoder).__name__}: train one with "
                              "train_stegastamp or load one with load_stegastamp")
        secret = torch.as_tensor(secret).detach().float().cpu()
        if secret.shape != (encoder.n_bits,) or not bool(((secret == 0) | (secret == 1)).all()):
            raise ConfigError(f"secret must be {encoder.n_bits} bits in {{0, 1}}, got shape {tuple(secret.shape)}: "
                              "use secret_bits(text, encoder.n_bits)")
        self.encoder, self.secret = encoder, secret

    def _apply(self, images: torch.Tensor, keys: list[int]) -> torch.Tensor:
        _, c, h, w = images.shape
        x = images.float().expand(-1, 3, -1, -1) if c == 1 else images.float()
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        self.encoder.to(images.device)
        with torch.no_grad():
            encoded = self.encoder(x, self.secret.to(images.device))[:, :, :h, :w]
        return encoded.mean(1, keepdim=True) if c == 1 else encoded

    def _params(self) -> dict[str, Any]:
        return {**self.encoder.config(), "secret": "".join(str(int(b)) for b in self.secret.tolist())}


# ---- the registry: name -> factory(**params) -> ImageTrigger ----
TRIGGERS: Registry[Callable[..., ImageTrigger]] = Registry("trigger")
TRIGGERS.register("badnet")(BadNet)
TRIGGERS.register("blended")(Blended)
TRIGGERS.register("sig")(SIG)
TRIGGERS.register("wanet")(WaNet)


def make_trigger(name: str, **kwargs: Any) -> ImageTrigger:
    """Build the registered trigger ``name`` with its parameters.

    Args:
        name: one of ``TRIGGERS.names()`` (``badnet``, ``blended``, ``sig``, ``wanet``).
        **kwargs: the trigger's constructor arguments.

    Raises:
        ConfigError: one line, for an unknown name, an unknown parameter or a value out of range.

    Example:
        >>> make_trigger("blended", alpha=0.1).describe()
        {'name': 'blended', 'alpha': 0.1, 'seed': 0}
    """
    factory = TRIGGERS.get(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        import inspect

        params = ", ".join(p for p in inspect.signature(factory).parameters if p != "self")
        raise ConfigError(f"bad parameters for trigger {name!r} ({err}): use {params}") from err


def optimize_patch(
    clip: ClipModel,
    images: torch.Tensor,
    target_text: str,
    *,
    size: int,
    steps: int = 100,
    lr: float = 0.05,
    batch_size: int = 64,
    location: str = "center",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A patch optimised against a clean CLIP so that images carrying it embed near ``target_text``.

    The TrojVQA-style optimised visual key (Walmer et al.): Adam on an unconstrained logit
    (``patch = sigmoid(logit)``, initialised from ``U(0.02, 0.98)``) maximising the mean cosine
    between ``clip.encode_image(pasted)`` and ``clip.encode_text(tokenize(target_text))``. Each step
    draws ``batch_size`` images (with replacement); with ``location="random"`` every drawn image
    gets a fresh place. The CLIP runs in eval mode with frozen parameters; its ``requires_grad``
    flags and train/eval mode are restored afterwards.

    Args:
        clip: the (clean) CLIP, already on ``device``.
        images: ``(N, 1 or 3, H, W)`` in [0, 1] (grey is repeated to RGB).
        target_text: the caption the patched images should match.
        size: patch side in pixels (at most ``min(H, W)``).
        steps: Adam steps (0 returns the initial patch).
        lr: Adam learning rate on the logit.
        batch_size: images per step.
        location: ``"center"`` or ``"random"``.
        seed: seed of the initial patch, the batches and the places.
        device: where to compute (None: the CLIP's device).

    Returns:
        The patch ``(3, size, size)`` in [0, 1], float32 on CPU (paste it with :class:`PatchTrigger`).

    Example:
        >>> patch = optimize_patch(clip, images, "a photo of a banana", size=16, steps=200)  # doctest: +SKIP
        >>> trigger = PatchTrigger(patch, location="random")  # doctest: +SKIP
    """
    _check_images(images)
    n, _, h, w = images.shape
    if int(size) != size or size < 1:
        raise ConfigError(f"size={size}: use a positive integer")
    _check_fits(size, size, h, w, "a patch")
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"steps={steps}: use an integer >= 0")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: use a positive integer")
    if not lr > 0:
        raise ConfigError(f"lr={lr}: use a value > 0")
    if location not in _LOCATIONS:
        raise ConfigError(f"location={location!r}: use one of {', '.join(_LOCATIONS)}")
    params = list(clip.parameters())
    dev = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    gen = torch.Generator().manual_seed(int(seed))
    logit = torch.logit(0.02 + 0.96 * torch.rand(3, size, size, generator=gen)).to(dev).requires_grad_(True)
    flags, was_training = [p.requires_grad for p in params], clip.training
    try:
        for p in params:
            p.requires_grad_(False)
        clip.eval()
        with torch.no_grad():
            target = clip.encode_text(clip.tokenize([target_text], dev)).float()  # (1, D), unit norm
        opt = torch.optim.Adam([logit], lr=lr)
        for _ in range(int(steps)):
            idx = torch.randint(0, n, (int(batch_size),), generator=gen)
            x = images[idx].float()
            x = (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).to(dev)
            rand_gen = gen if location == "random" else None
            corners = [_place(h, w, size, size, location, rand_gen) for _ in range(len(x))]
            feats = clip.encode_image(_paste(x, torch.sigmoid(logit), corners)).float()
            loss = -(feats @ target.T).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        clip.train(was_training)
    return torch.sigmoid(logit).detach().float().cpu()
