"""Image-text retrieval metrics (Recall@K, median rank) and their random-ranking chance levels.

Conventions (those of the Karpathy/VSE++ evaluation code that MEM, CLIP and most retrieval papers
copy):

- Ranks are 0-based: rank 0 means the correct item came first.
- Image-to-text (i2t): an image has several captions; its rank is the position of its FIRST
  (best-ranked) correct caption among all ``N_txt`` captions.
- Text-to-image (t2i): a caption's rank is the position of its own image among all ``N_img`` images.
- ``R@K = 100 * fraction of queries with rank < K`` (percent, 0..100).
- ``medr = floor(median(ranks)) + 1`` (1-based), exactly ``np.floor(np.median(ranks)) + 1`` as in the
  VSE/SCAN ``i2t``/``t2i`` functions.
- Ties are broken pessimistically by default: a wrong item scored exactly like the correct one is
  ranked before it. A collapsed model (all embeddings equal) then scores 0, not a lucky 100 from
  whatever order a sort happens to use. ``ties="optimistic"`` ranks the correct item first instead.

References:
    Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions",
    arXiv:1412.2306; Faghri et al., "VSE++", arXiv:1707.05612.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import comb

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from obstructlib.errors import ConfigError, check_finite

__all__ = ["chance_retrieval", "median_rank", "retrieval_metrics", "retrieval_ranks"]


def _features(x: torch.Tensor | np.ndarray, name: str, device: torch.device | str | None) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2 or t.shape[0] == 0:
        raise ConfigError(f"{name} has shape {tuple(t.shape)}: pass a non-empty (N, D) feature matrix")
    check_finite(name, t)  # NaN similarities would rank every correct item first
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def median_rank(ranks: np.ndarray | Sequence[int]) -> float:
    """``floor(median(ranks)) + 1`` for 0-based ranks: the 1-based median rank of VSE/Karpathy code.

    Example:
        >>> median_rank([0, 3])
        2.0
    """
    return float(np.floor(np.median(np.asarray(ranks))) + 1)


@torch.no_grad()
def retrieval_ranks(
    image_features: torch.Tensor | np.ndarray,
    text_features: torch.Tensor | np.ndarray,
    text_image_ids: torch.Tensor | np.ndarray | Sequence[int],
    *,
    normalize: bool = True,
    ties: str = "pessimistic",
    chunk_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of the correct match for every image (i2t) and every caption (t2i).

    The similarity matrix is never held whole: it is computed in blocks of ``chunk_size`` rows
    (about ``chunk_size * max(N_img, N_txt)`` floats at a time), once per direction, so that
    5 000 images x 25 000 captions fits in a few hundred MB.

    Args:
        image_features: image embeddings ``(N_img, D)``.
        text_features: caption embeddings ``(N_txt, D)``.
        text_image_ids: for each caption the row of its image in ``image_features``, ints in
            ``[0, N_img)``; every image needs at least one caption.
        normalize: L2-normalise both sets first (cosine similarity); False uses raw dot products.
        ties: ``"pessimistic"`` (wrong items tied with the correct one rank first) or ``"optimistic"``.
        chunk_size: rows of the similarity matrix computed at a time.
        device: where to compute; None keeps the features' device.
        progress: show a progress bar.

    Shape:
        Returns ``(i2t_ranks (N_img,), t2i_ranks (N_txt,))``, int64 numpy arrays.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ConfigError(f"ties={ties!r} is unknown: use 'pessimistic' or 'optimistic'")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size} must be a positive number of rows")
    img = _features(image_features, "image_features", device)
    txt = _features(text_features, "text_features", img.device)
    if img.shape[1] != txt.shape[1]:
        raise ConfigError(
            f"image features have dim {img.shape[1]} but text features {txt.shape[1]}: use one model's embeddings"
        )
    if normalize:
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    ids = torch.as_tensor(
        np.asarray(text_image_ids.cpu() if isinstance(text_image_ids, torch.Tensor) else text_image_ids)
    )
    ids = ids.reshape(-1).to(img.device).long()
    n_img, n_txt = img.shape[0], txt.shape[0]
    if ids.shape[0] != n_txt:
        raise ConfigError(
            f"{n_txt} captions but {ids.shape[0]} text_image_ids: pass one image index per caption"
        )
    if int(ids.min()) < 0 or int(ids.max()) >= n_img:
        raise ConfigError(
            f"text_image_ids must be image rows in [0, {n_img}): map ids with np.unique(ids, return_inverse=True)"
        )
    if torch.bincount(ids, minlength=n_img).min() == 0:
        raise ConfigError("some image has no caption in text_image_ids: drop it from image_features first")
    beats = torch.ge if ties == "pessimistic" else torch.gt  # does a wrong item rank before the correct one?

    i2t = torch.empty(n_img, dtype=torch.long, device=img.device)
    t2i = torch.empty(n_txt, dtype=torch.long, device=img.device)
    steps = [("i2t", s) for s in range(0, n_img, chunk_size)] + [
        ("t2i", s) for s in range(0, n_txt, chunk_size)
    ]
    for direction, start in tqdm(steps, desc="retrieval", disable=not progress):
        if direction == "i2t":
            rows = torch.arange(start, min(start + chunk_size, n_img), device=img.device)
            sims = img[rows] @ txt.T  # (B, N_txt)
            own = ids[None, :] == rows[:, None]  # the image's own captions
            best = sims.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)
            i2t[rows] = (beats(sims, best) & ~own).sum(dim=1)
        else:
            rows = torch.arange(start, min(start + chunk_size, n_txt), device=img.device)
            sims = txt[rows] @ img.T  # (B, N_img)
            gt = sims.gather(1, ids[rows, None])
            own = torch.arange(n_img, device=img.device)[None, :] == ids[rows, None]
            t2i[rows] = (beats(sims, gt) & ~own).sum(dim=1)
    return i2t.cpu().numpy(), t2i.cpu().numpy()


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ConfigError(f"ks={ks} must be positive integers such as (1, 5, 10)")
    return ks


def retrieval_metrics(
    image_features: torch.Tensor | np.ndarray,
    text_features: torch.Tensor | np.ndarray,
    text_image_ids: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    **kwargs,
) -> dict[str, float]:
    """Recall@K (percent) and median rank in both directions; see the module docstring for the rules.

    Args:
        image_features: image embeddings ``(N_img, D)``.
        text_features: caption embeddings ``(N_txt, D)``, several captions per image allowed.
        text_image_ids: ``(N_txt,)`` row of each caption's image in ``image_features``.
        ks: the K of each Recall@K.
        **kwargs: ``normalize``, ``ties``, ``chunk_size``, ``device``, ``progress`` of
            :func:`retrieval_ranks`.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "medr_i2t", "medr_t2i"}``
        (one ``*_r{K}`` pair per K), R@K in percent 0..100, medr 1-based.

    Example:
        >>> m = retrieval_metrics(torch.eye(2), torch.eye(2)[[0, 0, 1]], [0, 0, 1])
        >>> m["i2t_r1"], m["t2i_r1"], m["medr_t2i"]
        (100.0, 100.0, 1.0)
    """
    ks = _check_ks(ks)
    i2t, t2i = retrieval_ranks(image_features, text_features, text_image_ids, **kwargs)
    out = {f"i2t_r{k}": 100.0 * float(np.mean(i2t < k)) for k in ks}
    out.update({f"t2i_r{k}": 100.0 * float(np.mean(t2i < k)) for k in ks})
    out["medr_i2t"], out["medr_t2i"] = median_rank(i2t), median_rank(t2i)
    return out


def _min_rank_median(num_items: int, num_correct: int) -> int:
    """Lower median of the 0-based rank of the best of ``num_correct`` correct items among
    ``num_items`` ranked uniformly at random: the smallest r with P(rank <= r) >= 1/2.

    P(rank >= r) = C(num_items - r, num_correct) / C(num_items, num_correct) (all correct items
    avoid the first r places); exact integer arithmetic, binary search over r.
    """
    total = comb(num_items, num_correct)
    lo, hi = 0, num_items - num_correct  # P(rank <= hi) = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if 2 * comb(num_items - mid - 1, num_correct) <= total:  # P(rank <= mid) >= 1/2
            hi = mid
        else:
            lo = mid + 1
    return lo


def chance_retrieval(
    num_images: int, captions_per_image: int, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Expected retrieval metrics of a random ranking (the "random guess" line next to R@K).

    With ``N = num_images``, ``c = captions_per_image`` and ``N_txt = N * c`` captions:

    - t2i: the own image's rank is uniform over N places, so ``R@K = 100 * K / N``.
    - i2t: R@K is the chance that at least one of the c correct captions is in the top K,
      ``100 * (1 - C(N_txt - c, K) / C(N_txt, K))`` (exact rational arithmetic).
    - medr: the median of the rank distribution itself (what the sample median of
      :func:`retrieval_metrics` tends to as queries grow), through the same ``floor(.) + 1``
      convention. The midpoint of the two middle values floors to the lower one, so
      ``medr = lower median + 1``; t2i is the ``c = 1, N_txt = N`` case, e.g. 500 for N = 1000,
      and i2t for N = 1000, c = 5 is 647 (about ``N_txt * (1 - 2**(-1/c))``).

    Args:
        num_images: number of test images ``N >= 1``.
        captions_per_image: captions per image ``c >= 1``.
        ks: the K of each Recall@K.

    Returns:
        The keys of :func:`retrieval_metrics`.

    Example:
        >>> chance_retrieval(100, 5, ks=(1,))["t2i_r1"]
        1.0
    """
    if num_images < 1 or captions_per_image < 1:
        raise ConfigError(
            f"num_images={num_images} and captions_per_image={captions_per_image} must both be >= 1"
        )
    ks = _check_ks(ks)
    n, c = int(num_images), int(captions_per_image)
    n_txt = n * c
    out = {
        f"i2t_r{k}": 100.0 * float(1 - Fraction(comb(n_txt - c, k), comb(n_txt, k))) if k < n_txt else 100.0
        for k in ks
    }
    out.update({f"t2i_r{k}": 100.0 * min(k, n) / n for k in ks})
    out["medr_i2t"] = float(_min_rank_median(n_txt, c) + 1)
    out["medr_t2i"] = float(_min_rank_median(n, 1) + 1)
    return out
