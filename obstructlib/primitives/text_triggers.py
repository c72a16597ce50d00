"""Text triggers: insert k token ids after the start token, and search them with HotFlip.

The shared text-side primitive of the course (MEM's per-pair trigger, token-level backdoor
triggers): token ids are edited directly, never re-tokenised text, so a trigger is exactly the
ids the model sees.

- :func:`insert_trigger` puts ``k`` ids right after the start-of-text token, shifting the caption
  right (truncated captions keep their end-of-text token last, where CLIP reads the feature);
  :func:`strip_tokens` removes ``k`` ids there again (a hacker who suspects a trigger);
- :func:`random_trigger` draws ids uniformly from the non-special vocabulary;
- :func:`trigger_vocabulary` restricts the candidates to a reduced vocabulary (the captions' own
  ids plus random others), and :func:`banned_outside` turns it into the ids to ban;
- :func:`hotflip_candidates` ranks every vocabulary token for every trigger position by the
  first-order (linearised) change of the loss, ``-g_p . E_w`` (Ebrahimi et al.'s HotFlip);
- :func:`hotflip_search` greedily walks the positions left to right and keeps, per position,
  the best of "current" and the K candidate ranks by the exact batch loss, so the batch loss never
  increases; :func:`hotflip_attack` chains gradient, candidates and search for a CLIP model.

References:
    Ebrahimi et al., HotFlip: White-Box Adversarial Examples for Text Classification, arXiv:1712.06751.
    Wallace et al., Universal Adversarial Triggers for Attacking and Analyzing NLP, arXiv:1908.07125.
    Liu et al., Multimodal Unlearnable Examples (MEM), arXiv:2407.16307 (per-pair caption triggers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from obstructlib.data.tokens import insert_trigger, strip_tokens
from obstructlib.errors import ConfigError

if TYPE_CHECKING:
    from obstructlib.models.clip import ClipModel

__all__ = [
    "banned_outside",
    "decode_trigger",
    "hotflip_attack",
    "hotflip_candidates",
    "hotflip_search",
    "insert_trigger",
    "random_trigger",
    "strip_tokens",
    "trigger_vocabulary",
]


def _ids_in_range(ids: Sequence[int] | torch.Tensor, vocab_size: int) -> torch.Tensor:
    t = torch.as_tensor(ids, dtype=torch.long).flatten() if len(ids) else torch.empty(0, dtype=torch.long)
    return t[(t >= 0) & (t < vocab_size)].unique()


def trigger_vocabulary(
    tokens: torch.Tensor,
    vocab_size: int,
    size: int,
    special_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A reduced trigger vocabulary: the ids the captions use, then random other ids, ``size`` in all.

    MEM's CPU demonstration (spec Sec. 4.2) keeps HotFlip over a small vocabulary; triggers drawn
    from the captions' own words are also harder to strip by spotting foreign tokens. When the
    captions use more than ``size`` ids, the ``size`` most frequent are kept.

    Args:
        tokens: tokenised captions ``(N, L)`` (padding and special ids are skipped).
        vocab_size: V of the tokenizer.
        size: ids in the vocabulary (at least 1).
        special_ids: start, end and padding ids: never included.
        generator: draws the random ids.

    Shape:
        Returns ``(size,)`` int64, sorted (fewer only when V minus the special ids is smaller).

    Example:
        >>> v = trigger_vocabulary(torch.tensor([[0, 5, 5, 7, 9]]), 10, 4, special_ids=[0, 9],
        ...                        generator=torch.Generator().manual_seed(0))
        >>> len(v), {5, 7} <= set(v.tolist()), bool(torch.isin(v, torch.tensor([0, 9])).any())
        (4, True, False)
    """
    if size < 1:
        raise ConfigError(f"trigger vocabulary size={size}: use at least 1 id, or none for the whole vocabulary")
    banned = _ids_in_range(special_ids, vocab_size)
    ids, counts = tokens.flatten().long().unique(return_counts=True)
    keep = (ids >= 0) & (ids < vocab_size) & ~torch.isin(ids, banned)
    ids, counts = ids[keep], counts[keep]
    chosen = ids[counts.argsort(descending=True, stable=True)[:size]]
    if len(chosen) < size:
        rest = torch.ones(vocab_size, dtype=torch.bool)
        rest[banned] = False
        rest[chosen] = False
        pool = rest.nonzero().squeeze(1)
        extra = pool[torch.randperm(len(pool), generator=generator)[: size - len(chosen)]]
        chosen = torch.cat([chosen, extra])
    return chosen.sort().values


def banned_outside(allowed: torch.Tensor, vocab_size: int, special_ids: Sequence[int] = ()) -> torch.Tensor:
    """The ids to ban so that only ``allowed`` (minus the special ids) stay candidates.

    Example:
        >>> banned_outside(torch.tensor([1, 3]), 5, special_ids=[3]).tolist()
        [0, 2, 3, 4]
    """
    keep = torch.zeros(vocab_size, dtype=torch.bool)
    keep[_ids_in_range(allowed, vocab_size)] = True
    keep[_ids_in_range(special_ids, vocab_size)] = False
    return (~keep).nonzero().squeeze(1)


def random_trigger(
    num: int,
    length: int,
    vocab_size: int,
    banned_ids: Sequence[int] | torch.Tensor = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniformly random trigger ids that are never in ``banned_ids`` (special tokens).

    Deliberate deviation: MEM's official code draws from ``[0, 30522)`` (a BERT-vocabulary
    leftover); we draw from the whole vocabulary minus the special ids.

    Shape:
        Returns ``(num, length)`` int64 on CPU.

    Example:
        >>> t = random_trigger(4, 3, 10, banned_ids=[0, 8, 9], generator=torch.Generator().manual_seed(0))
        >>> bool(((t > 0) & (t < 8)).all())
        True
    """
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[_ids_in_range(banned_ids, vocab_size)] = False
    pool = allowed.nonzero().squeeze(1)
    if len(pool) == 0:
        raise ConfigError("every token id is banned: the trigger has no candidates")
    return pool[torch.randint(len(pool), (num, length), generator=generator)]


def hotflip_candidates(
    grad: torch.Tensor, embedding_weight: torch.Tensor, num_candidates: int,
    banned_ids: Sequence[int] | torch.Tensor = (),
) -> torch.Tensor:
    """The ``K`` tokens per trigger position with the largest first-order loss DECREASE.

    Swapping position ``p`` to token ``w`` changes the loss by about ``g_p . (E_w - E_cur)``; the
    ranking over ``w`` only needs ``-g_p . E_w`` (MEM's ``hotflip_attack``). Banned ids (start,
    end, padding) get ``-inf`` and are never returned (deliberate deviation: the official code
    does not mask them, and an end token would move CLIP's pooling position).

    Args:
        grad: loss gradient with respect to the trigger positions' token embeddings.
        embedding_weight: the token embedding matrix ``E``.
        num_candidates: K (MEM: 16).
        banned_ids: ids that are never candidates.

    Shape:
        ``grad (B, k, d)``, ``embedding_weight (V, d)`` -> ``(B, k, K)`` int64.

    Example:
        >>> E = torch.eye(4)
        >>> hotflip_candidates(torch.tensor([[[0.0, -1.0, -2.0, -0.5]]]), E, 2, banned_ids=[2]).tolist()
        [[[1, 3]]]
    """
    if not 1 <= num_candidates:
        raise ConfigError(f"num_candidates={num_candidates}: use at least 1")
    scores = -torch.einsum("bkd,vd->bkv", grad.float(), embedding_weight.detach().float())
    banned = _ids_in_range(banned_ids, scores.shape[-1])
    if len(banned):
        scores[..., banned] = float("-inf")
    allowed = scores.shape[-1] - len(banned)
    if num_candidates > allowed:
        raise ConfigError(f"num_candidates={num_candidates} exceeds the {allowed} allowed tokens")
    return scores.topk(num_candidates, dim=-1).indices


@torch.no_grad()
def hotflip_search(
    batch_loss: Callable[[torch.Tensor], torch.Tensor], trigger: torch.Tensor, candidates: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Greedy left-to-right coordinate search over trigger positions, scored by the batch loss.

    For each position ``p`` in order, evaluate the batch loss with the current triggers and with
    "every sample takes its own c-th candidate at p" for ``c = 1..K`` (MEM's shared-rank beam of
    size 1), keep the option with the smallest loss, and move on from that choice. The current
    triggers are always option 0 and win ties, so the returned loss is never above the start.

    Args:
        batch_loss: ``batch_loss(trigger (B, k)) -> scalar`` (no gradient needed).
        trigger: current ids ``(B, k)``.
        candidates: ``(B, k, K)`` from :func:`hotflip_candidates`.

    Returns:
        ``(new trigger (B, k), its batch loss)``.

    Example:
        >>> loss = lambda t: (t.float() - 5).abs().mean()
        >>> hotflip_search(loss, torch.tensor([[0, 9]]), torch.tensor([[[4, 6], [5, 1]]]))
        (tensor([[4, 5]]), 0.5)
    """
    best = trigger.clone()
    best_loss = float(batch_loss(best))
    for p in range(trigger.shape[1]):
        start = best.clone()
        for c in range(candidates.shape[2]):
            option = start.clone()
            option[:, p] = candidates[:, p, c].to(option.device)
            loss = float(batch_loss(option))
            if loss < best_loss:  # strict: the current choice wins ties
                best, best_loss = option, loss
    return best, best_loss


def hotflip_attack(
    model: ClipModel,
    tokens: torch.Tensor,
    trigger: torch.Tensor,
    loss_of_text_features: Callable[[torch.Tensor], torch.Tensor],
    num_candidates: int = 16,
    banned_ids: Sequence[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, float, float]:
    """One HotFlip update of per-caption triggers that MINIMISES a loss of the text features.

    One backward pass gives the gradient at the trigger positions' token embeddings (through
    ``model.encode_text_embeds``), then :func:`hotflip_candidates` and :func:`hotflip_search`
    (``1 + k * K`` text-encoder forwards). Image features, if the loss needs them, belong in the
    closure and are computed once by the caller.

    Args:
        model: a ``ClipModel`` (``token_embedding``, ``encode_text``, ``encode_text_embeds``,
            ``eot_token_id``, ``special_token_ids``).
        tokens: captions WITHOUT trigger ``(B, L)``.
        trigger: current ids ``(B, k)``.
        loss_of_text_features: ``f(text_features (B, D)) -> scalar`` batch loss.
        num_candidates: K.
        banned_ids: never chosen (default: ``model.special_token_ids``).

    Returns:
        ``(new trigger, loss before, loss after)`` with ``loss after <= loss before``.

    References:
        Ebrahimi et al., arXiv:1712.06751; Liu et al. (MEM), arXiv:2407.16307, Sec. 3 (text step).

    Example:
        >>> new, before, after = hotflip_attack(clip, tok, trig, lambda t: clip_loss(img, t, s))  # doctest: +SKIP
    """
    eot = model.eot_token_id
    if eot is None:
        raise ConfigError("the model's tokenizer has no end-of-text token id: HotFlip needs a CLIP tokenizer")
    banned = model.special_token_ids if banned_ids is None else banned_ids
    k = trigger.shape[1]
    with torch.enable_grad():
        full = insert_trigger(tokens, trigger, eot)
        embeds = model.token_embedding(full).detach().requires_grad_(True)
        loss = loss_of_text_features(model.encode_text_embeds(embeds, full))
        (grad,) = torch.autograd.grad(loss.float(), embeds)
    candidates = hotflip_candidates(grad[:, 1 : 1 + k], model.token_embedding.weight, num_candidates, banned)

    def batch_loss(t: torch.Tensor) -> torch.Tensor:
        return loss_of_text_features(model.encode_text(insert_trigger(tokens, t, eot)))

    new, after = hotflip_search(batch_loss, trigger, candidates)
    return new, float(loss.detach()), after


def decode_trigger(tokenizer: object, trigger: torch.Tensor | Sequence[int]) -> str:
    """A trigger's ids as text (BPE word ends become spaces), e.g. for a notebook table.

    Example:
        >>> decode_trigger(clip.tokenizer, [320, 1125])  # doctest: +SKIP
        'a photo'
    """
    ids = [int(i) for i in (trigger.tolist() if isinstance(trigger, torch.Tensor) else trigger)]
    inner = getattr(tokenizer, "tokenizer", None)
    for dec in (tokenizer, inner):
        if dec is not None and hasattr(dec, "decode"):
            return str(dec.decode(ids)).strip()
    return " ".join(map(str, ids))
